/**
 * The Notifier: one LISTEN session per pool for every channel the parts of a process listen
 * on (the worker's new jobs and cancel requests, `Jobs.await`'s done channel, every bundle
 * finisher's bundle channel, of whatever schemas they use), fanned out to subscribers.
 *
 * A subscriber (`subscribe(channel)`, for the life of its scope) gets a queue of events: an
 * `Established` once the LISTEN on its channel is in place, again after every reconnect
 * (anything sent while it was not listening was missed: it looks now), and each
 * `Notification` that arrives between. Notifications come only after the `Established` of
 * the session they arrived on.
 *
 * One session per `PgClient` (per pool, as a process would have one): layers built on two
 * pools in one app get a session each, on their own database. The session is a connection
 * of its own, opened with the pool's settings (`PgClient.config`) but outside the pool, so
 * listening never takes a connection that claims and outcomes wait for, however many parts
 * listen: @effect/sql-pg's `PgClient.listen` reserves a pool connection per call and offers
 * no way to add a channel to it, while one `PgConnection`, pinned once, LISTENs on as many
 * channels as asked (its pinned view is reentrant; notifications are dispatched per channel).
 * It is opened with the first subscriber and closed with the last one, so a process that
 * listens to nothing (`Worker.listen: false`, no await, no bundle finisher) opens none.
 *
 * A lost session (or one that cannot be opened) is reported once to each distinct Observer
 * of the current subscribers (`workerError` at Warn; the default one logs it) and opened
 * again with `keepListening`'s backoff.
 *
 * Share one Notifier in an app by providing the module-level `layer` value: Effect builds a
 * layer once per reference in a build. Worker.layer, Jobs.layer and Bundle.toLayer all do.
 *
 * @internal
 */
import { PgClient, PgConnection } from "@effect/sql-pg"
import { Cause, Context, Effect, Exit, Fiber, Layer, Queue, Scope } from "effect"
import { type Events, Observer } from "../Observer.ts"
import { keepListening } from "./listen.ts"

/** What a subscriber hears, in order. */
export type Event =
  /** The LISTEN is in place (again): what was sent before may have been missed. */
  | { readonly _tag: "Established" }
  | { readonly _tag: "Notification"; readonly payload: string }

const established: Event = { _tag: "Established" }

interface Subscriber {
  readonly channel: string
  readonly events: Queue.Queue<Event>
  readonly observer: Events
  /** The session attempt that told it `Established` last (0: none yet). */
  told: number
}

/** To the session attempt in progress: the subscribers changed, or a channel's queue failed. */
type Signal = { readonly _tag: "Changed" } | { readonly _tag: "Lost"; readonly cause: Cause.Cause<unknown> }

/** One pool's session and its subscribers. */
interface Session {
  readonly subscribers: Set<Subscriber>
  /** The fiber keeping the session up (undefined once the last subscriber left). */
  fiber: Fiber.Fiber<never> | undefined
  /** Signals the attempt in progress (undefined between attempts: the next one looks afresh). */
  signal: ((signal: Signal) => void) | undefined
  /** Numbers the attempts, so that a subscriber is told `Established` once per attempt. */
  attempts: number
}

export class Notifier extends Context.Service<Notifier, {
  /**
   * Subscribes to `channel` (a full channel name, `<schema>.<kind>`) on the session of the
   * `PgClient` in context, until the scope closes. Lost sessions are reported to the
   * `Observer` in context.
   */
  readonly subscribe: (channel: string) => Effect.Effect<Queue.Dequeue<Event>, never, Scope.Scope | PgClient.PgClient>
}>()("effect-jobs/Notifier") {}

/** Every subscriber of `channel` told of this attempt gets the payloads. */
const deliver = (session: Session, attempt: number, channel: string, payloads: ReadonlyArray<PgConnection.Notification>) => {
  for (const sub of session.subscribers) {
    if (sub.channel !== channel || sub.told !== attempt) continue
    for (const n of payloads) Queue.offerUnsafe(sub.events, { _tag: "Notification", payload: n.payload })
  }
}

/**
 * One attempt: a connection, pinned, LISTENing on every channel subscribed to, kept in step
 * with the subscribers until a channel's queue fails (the connection is lost).
 */
const attempt = (client: PgClient.PgClient, session: Session, confirm: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const id = ++session.attempts
    const signals = yield* Queue.unbounded<Signal>()
    const signal = (s: Signal) => {
      Queue.offerUnsafe(signals, s)
    }
    session.signal = signal
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (session.signal === signal) session.signal = undefined
      })
    )
    // `multiplex` would let other fibers share the connection; nobody else uses this one.
    const connection = yield* PgConnection.make({ ...client.config, multiplex: false })
    // Pinned once: `listen` on the pinned view does not pin again, so one session holds them all.
    const pinned = yield* connection.pin
    const scope = yield* Effect.scope
    /** The channels LISTENed on, each with a scope whose closing stops its pump and UNLISTENs. */
    const listening = new Map<string, Scope.Closeable>()

    const pump = (channel: string, queue: Queue.Dequeue<PgConnection.Notification, unknown>) =>
      Effect.forever(Effect.flatMap(Queue.takeAll(queue), (ns) => Effect.sync(() => deliver(session, id, channel, ns)))).pipe(
        Effect.catchCause((cause) =>
          Effect.sync(() => {
            if (!Cause.hasInterruptsOnly(cause)) signal({ _tag: "Lost", cause })
          })
        )
      )

    const reconcile = Effect.gen(function*() {
      const wanted = new Set(Array.from(session.subscribers, (s) => s.channel))
      for (const [channel, channelScope] of listening) {
        if (wanted.has(channel)) continue
        listening.delete(channel)
        yield* Scope.close(channelScope, Exit.void)
      }
      for (const channel of wanted) {
        if (listening.has(channel)) continue
        const channelScope = yield* Scope.fork(scope)
        const queue = yield* Scope.provide(pinned.listen(channel), channelScope)
        listening.set(channel, channelScope)
        yield* Effect.forkIn(pump(channel, queue), channelScope)
      }
      for (const sub of session.subscribers) {
        if (sub.told === id || !listening.has(sub.channel)) continue
        sub.told = id
        Queue.offerUnsafe(sub.events, established)
      }
    })

    yield* reconcile
    yield* confirm
    while (true) {
      const batch = yield* Queue.takeAll(signals)
      const lost = batch.find((s) => s._tag === "Lost")
      if (lost !== undefined) return yield* Effect.failCause(lost.cause)
      yield* reconcile
    }
  })

/** A lost session, told once to each distinct Observer among its subscribers. */
const reportLost = (session: Session) => (cause: Cause.Cause<unknown>) =>
  Effect.suspend(() => {
    const channels = Array.from(new Set(Array.from(session.subscribers, (s) => s.channel))).join(", ")
    const observers = new Set(Array.from(session.subscribers, (s) => s.observer))
    return Effect.forEach(
      observers,
      (o) => o.workerError("*", `LISTEN session lost; reconnecting (${channels})`, Cause.squash(cause), "Warn"),
      { discard: true }
    )
  })

export const make: Effect.Effect<Notifier["Service"], never, Scope.Scope> = Effect.gen(function*() {
  const layerScope = yield* Effect.scope
  const sessions = new Map<PgClient.PgClient, Session>()

  const subscribe = (channel: string) =>
    Effect.gen(function*() {
      const client = yield* PgClient.PgClient
      const observer = yield* Observer
      const events = yield* Queue.unbounded<Event>()
      const sub: Subscriber = { channel, events, observer, told: 0 }
      yield* Effect.acquireRelease(
        Effect.gen(function*() {
          let session = sessions.get(client)
          if (session === undefined) {
            sessions.set(client, session = { subscribers: new Set(), fiber: undefined, signal: undefined, attempts: 0 })
          }
          session.subscribers.add(sub)
          if (session.fiber === undefined) {
            const s = session
            session.fiber = yield* Effect.forkIn(
              keepListening(reportLost(s), (confirm) => attempt(client, s, confirm)),
              layerScope
            )
          } else session.signal?.({ _tag: "Changed" })
          return session
        }),
        (session) =>
          Effect.gen(function*() {
            session.subscribers.delete(sub)
            yield* Queue.shutdown(events)
            if (session.subscribers.size > 0) return session.signal?.({ _tag: "Changed" })
            // The last one: close the session, and wait for it, so that its connection is gone.
            if (sessions.get(client) === session) sessions.delete(client)
            const fiber = session.fiber
            session.fiber = undefined
            if (fiber !== undefined) yield* Fiber.interrupt(fiber)
          })
      )
      return events as Queue.Dequeue<Event>
    })

  return Notifier.of({ subscribe })
})

/** The Notifier; provide this one value everywhere, so that a build shares one instance. */
export const layer = Layer.effect(Notifier, make)
