/**
 * The child side of the chaos suite's process protocol, shared by its worker scripts
 * (worker.ts, flow-worker.ts, flow-rate-worker.ts): lines on stdout (`say`), and `serve`,
 * which builds a layer, says `ready <pid>`, and on SIGTERM closes it (a graceful shutdown),
 * says `stopped` and exits 0.
 */
import { Effect, Exit, Layer, Scope } from "effect"

export const say = (line: string) => process.stdout.write(`${line}\n`)

export const serve = <A, E>(layer: Layer.Layer<A, E>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(layer, scope)
    say(`ready ${process.pid}`)
    process.once("SIGTERM", () => {
      Effect.runFork(
        Scope.close(scope, Exit.void).pipe(
          Effect.andThen(Effect.sync(() => {
            say("stopped")
            process.exit(0)
          }))
        )
      )
    })
    // Keep the process alive until it is told to stop.
    yield* Effect.never
  })
