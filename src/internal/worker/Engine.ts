/**
 * The worker's engine: `make` builds what `Worker.layer` provides (src/Worker.ts holds
 * the options, the service's interface and the layer; the module header there says what a
 * worker does). It only wires the parts together, and shuts them down in order:
 *
 *   Config.ts      the options checked and resolved (`validate`)
 *   Held.ts        one record per claim held: token, lease deadline, phase, lost, cancelling
 *   Producer.ts    per queue: the claim loop, the buffer (ClaimBuffer.ts), the adaptive prefetch
 *   DueTimers.ts   short retries and snoozes promoted when due, not at the next maintenance round
 *   Executor.ts    runs one job, classifies its exit, hands the outcome to the completer
 *   Lease.ts       the heartbeat and the lease watch
 *   Cancel.ts      cancel requests for held jobs
 *   Listener.ts    the subscriptions to the process's LISTEN session (new jobs, cancel requests)
 *   Registration.ts the `workers` row and the session lock that says this process lives
 *   Controls.ts    reconfigure, setConcurrency, pause/resume, status, the control poll
 *   Settings.ts    the settings given as Effects: read at startup, then every settingsInterval
 *   TestSignals.ts points in the worker's life a test can wait on (River's test signals)
 *   ../Completer.ts          outcomes written in batches
 *   ../Throughput.ts         outcomes counted per minute, written once a second
 *   ../maintenance/          promoter and rescuer (every worker); pruner, no-handler check and analyzer (the leader)
 *
 * @internal
 */
import { Cause, Clock, Duration, Effect, Fiber } from "effect"
import { PgClient } from "@effect/sql-pg"
import * as Completer from "../Completer.ts"
import * as Analyzer from "../maintenance/Analyzer.ts"
import * as NoHandler from "../maintenance/NoHandler.ts"
import * as Promoter from "../maintenance/Promoter.ts"
import * as Pruner from "../maintenance/Pruner.ts"
import * as Rescuer from "../maintenance/Rescuer.ts"
import * as Running from "../Running.ts"
import * as Throughput from "../Throughput.ts"
import { JobStore } from "../Store.ts"
import { Observer } from "../../Observer.ts"
import type { Options, Service } from "../../Worker.ts"
import * as Cancel from "./Cancel.ts"
import { checkPool, defaultNoHandlerMillis, jitter, type Resolved } from "./Config.ts"
import * as Controls from "./Controls.ts"
import * as DueTimers from "./DueTimers.ts"
import * as Executor from "./Executor.ts"
import { HeldJobs } from "./Held.ts"
import * as Lease from "./Lease.ts"
import * as Listener from "./Listener.ts"
import * as Producer from "./Producer.ts"
import * as Registration from "./Registration.ts"
import * as Settings from "./Settings.ts"
import { type Signals, TestSignals } from "./TestSignals.ts"

/**
 * At shutdown, how long the outcomes of the last runs may take to be written once
 * the grace period is over. Reached only when the database is unreachable: then
 * the shutdown ends anyway, and the unwritten jobs are rescued when their leases lapse.
 */
const shutdownWriteMillis = 5000

/**
 * Graceful shutdown, in order:
 *   1. stop claiming: a claim under way is finished and its jobs given back with the rest of
 *      the buffer (waited for at most the grace period: a claim can only hang on a database
 *      that does not answer, and then its jobs are rescued when their leases lapse);
 *   2. let running jobs finish within the grace period;
 *   3. interrupt the rest: each returns its job to the queue (attempt given back);
 *   4. every outcome is in the database before the scope closes; if the database stays
 *      unreachable, at most `shutdownWriteMillis` more: what is not written then is given
 *      up (those jobs stay `running` until their lease lapses and are rescued).
 */
const shutdown = (
  config: Resolved,
  producers: Producer.Producers,
  running: Running.Running,
  completer: Completer.Completer,
  signals: Signals
) =>
  Effect.gen(function*() {
    const grace = Duration.millis(config.graceMillis)
    const loops = producers.interruptAll()
    yield* signals.producersInterrupted
    yield* Fiber.awaitAll(loops).pipe(Effect.timeoutOrElse({ duration: grace, orElse: () => Effect.void }))
    yield* running.awaitEmpty.pipe(
      Effect.timeoutOrElse({ duration: grace, orElse: () => Effect.void })
    )
    yield* running.interruptAll
    yield* completer.drain.pipe(
      Effect.timeoutOrElse({
        duration: Duration.millis(shutdownWriteMillis),
        orElse: () => Effect.andThen(completer.abandon, completer.drain)
      })
    )
  }).pipe(Effect.ignore)

/** Builds the worker inside the current scope. */
/** Runs `effect`, and the fibers it forks, on the real clock whatever clock is in context (a TestClock). */
const onRealClock = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provideService(effect, Clock.Clock, Clock.Clock.defaultValue())

export const make = Effect.fnUntraced(function*(options: Options) {
  // (every setting given as an Effect read once: a failed read fails the layer here)
  const config = yield* Settings.resolve(options)
  if (options.pruner !== false) yield* Pruner.validate(options.pruner ?? {})
  const pool = (yield* PgClient.PgClient).config as { readonly maxConnections?: number | undefined }
  yield* checkPool(config, options.pruner !== false, pool.maxConnections ?? 10)
  const store = yield* JobStore
  const observer = yield* Observer
  // Before the completer: its finalizer (the last counts written) then runs after the
  // completer's last outcomes are in.
  const throughput = yield* Throughput.make({
    workerId: config.workerId,
    store,
    onError: (message, cause) => observer.workerError("*", message, cause, "Warn")
  })
  // The worker's `retention` in force: as read at startup, then as the settings reader sets it.
  let retention = config.retention
  const completer = yield* Completer.make({
    retention: () => retention,
    tally: throughput.tally,
    maxBatch: config.maxCompletionBatch,
    maxPending: config.maxPendingOutcomes,
    onError: (message, cause, level) => observer.workerError("*", message, cause, level)
  })
  const held = new HeldJobs()
  const running = yield* Running.make
  // The clock of the worker's fibers (a TestClock in tests), read synchronously on the hot path.
  const clock = yield* Clock.Clock
  const dueTimers = yield* DueTimers.make({
    store,
    observer,
    clock,
    horizonMillis: config.maintenanceMillis,
    // (called only once a run's outcome is written, long after `producers` is made below)
    wake: (queue) => producers.get(queue)?.notify()
  })
  const executor = Executor.make({
    clock,
    scheduled: dueTimers.scheduled,
    observer,
    completer,
    held,
    handlers: yield* Executor.collectHandlers(yield* Effect.context<never>()),
    middleware: options.middleware ?? [],
    defaultMiddleware: options.defaultMiddleware ?? true
  })
  const paused = new Controls.PauseFlags()
  // Before the first claim: a queue paused for all workers stays paused on a worker that starts now.
  yield* Controls.readPaused(store, observer, paused, config.queues.map((q) => q.name))
  const producers = yield* Producer.makeProducers({
    config,
    store,
    observer,
    completer,
    held,
    running,
    executor,
    isPaused: paused.isPaused
  })
  // Before the first claim; closed after the graceful shutdown (its finalizer is added later).
  // On the real clock, whatever clock the worker runs on: the registration says whether this
  // process's database session lives, which is real time (a TestClock jump of a day would
  // otherwise run 172,800 beats and 864,000 fence checks, and fence every held job).
  yield* onRealClock(Registration.start({ config, store, observer, held, producers, running, completer, names: executor.names }))
  for (const queue of config.queues) yield* producers.start(queue)

  // -- background fibers; each is interrupted when the scope closes --------------------
  const cancel = Cancel.make({ held, producers, completer, observer, running })
  if (config.listen) yield* Listener.start({ store, producers, cancel })
  // Leases are real time too: their deadlines are the database's (claim and heartbeat set
  // `now() + lease`), so a TestClock jump must not make this worker think they lapsed.
  yield* onRealClock(Lease.start({ config, store, observer, held, producers, running }))
  const signals = yield* TestSignals
  const maintenance = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    yield* Promoter.runOnce(store, now)
    yield* Rescuer.runOnce(store, now)
  }).pipe(
    Effect.catchCause((cause) => observer.workerError("*", "maintenance failed", Cause.squash(cause), "Warn")),
    Effect.andThen(signals.maintained ?? Effect.void)
  )
  yield* Effect.forkScoped(
    Effect.forever(Effect.andThen(maintenance, Effect.suspend(() => Effect.sleep(jitter(config.maintenanceMillis)))))
  )
  const controls = yield* Controls.make({
    options,
    config,
    store,
    observer,
    held,
    producers,
    paused,
    cancel,
    setRetention: (next) => {
      retention = next
    },
    settingsRead: signals.settingsRead
  })
  // Pruning finished jobs past their retention (one leader among all workers); the no-handler
  // check and the analyzer run on the same leader, after each round of pruning.
  const noHandler = NoHandler.make(store, observer, {
    onRound: signals.noHandlerChecked,
    timeoutMillis: config.noHandlerMillis,
    warnMillis: Number.isFinite(config.noHandlerMillis) ? config.noHandlerMillis : defaultNoHandlerMillis,
    self: () => ({ queues: producers.served(), names: executor.names })
  })
  // Then fresh planner statistics for the jobs table, if nothing else keeps them fresh.
  const leaderWork = { round: Effect.andThen(noHandler.round, Analyzer.round(store, observer)), elected: noHandler.elected }
  const pruner = options.pruner === false
    ? Pruner.none
    : yield* Pruner.make(options.pruner ?? {}, (message, cause) => observer.workerError("*", message, cause, "Warn"), leaderWork)

  // Added last, so it runs first when the scope closes.
  yield* Effect.addFinalizer(() => shutdown(config, producers, running, completer, signals))

  return {
    workerId: config.workerId,
    wake: producers.wakeAll,
    running: Effect.sync(running.size),
    reconfigure: controls.reconfigure,
    setConcurrency: controls.setConcurrency,
    pause: controls.pause,
    resume: controls.resume,
    status: controls.status,
    pruner
  } satisfies Service
})
