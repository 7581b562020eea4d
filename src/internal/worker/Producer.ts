/**
 * The producer of one queue: its claim loop, the buffer of claimed jobs, and the adaptive
 * prefetch. `Producers` is the set of them, one per queue served.
 *
 * States of a producer, in prose:
 *   hungry   the queue may have runnable jobs: claim while there is room
 *            (running + buffered < concurrency + prefetch) and the buffer is low;
 *   sated    the last claim came back short: wait for a NOTIFY, the poll timer,
 *            or a free slot for a buffered job.
 * Claimed jobs wait in a small local buffer (at most `prefetch`) so the next
 * job starts the moment a slot frees, without a round trip. Buffered jobs are
 * held (leased and heartbeated) like running ones, and are returned to the
 * queue, attempt given back, when the producer stops.
 *
 * Priority with a buffer. The buffer starts its jobs by priority, then in claim order
 * (ClaimBuffer.ts), so a claim that brings better jobs than those buffered puts them
 * first. A producer whose buffer is above its low water does not claim, though, and a
 * better job enqueued meanwhile would wait in the table until the buffer drained. So a
 * NOTIFY (or a poll) that comes while the buffer holds jobs something could beat (of a
 * priority above the lowest there is) makes the producer *probe*, `probeDelayMillis`
 * later: one claim of only jobs strictly better than its worst buffered ones
 * (`jobClaimAhead`), at most as many as it buffers of that worst priority, even with the
 * buffer full; then it gives back as many of those worst jobs as it is now over its room
 * (attempt not spent, their place in line kept). A probe that came back full is followed
 * by another at once (there may be more).
 *
 * The delay does two things. It throttles: NOTIFYs that come meanwhile are answered by the
 * same probe, so a producer probes at most once per delay, and a probe is one statement
 * per NOTIFY at most, never one per job (a sated producer already claims once per NOTIFY;
 * a producer that hears none, as in the bench's drain, never probes). And it lets idle
 * workers go first: they claim at once on the NOTIFY, and a job they can start now should
 * not be taken into a buffer behind busy slots; the probe finds only what they left.
 *
 *
 * A long transaction elsewhere keeps the dead index entries of every job claimed since it
 * began, and a claim reads them all again. While full claims are expensive, plain claims start
 * past them, at a floor the last short claim set, with an occasional full claim for what lies
 * below it (ClaimFloor.ts).
 *
 * Flow control. A queue with `flow` (fleet-wide limits, groups, sequences) claims through
 * the gated claim (`jobClaimGated`, migrations/0014) instead, by default with prefetch 0 (it
 * claims only for free slots), and never probes (the probe's claim knows no limits). A claim that comes back short there may
 * mean the queue is at a fleet-wide limit rather than drained: the producer waits for a NOTIFY,
 * the poll, or one of its own slots to free (a run ending releases it and opens the signal).
 * With a global limit, each claim also says how many of the fleet's slots this worker holds
 * (`slots`): it starts at most that many jobs of the queue at once, and the rest of what it
 * claimed waits in the buffer, holding no slot.
 *
 * @internal
 */
import { Cause, Clock, Effect, Exit, Fiber, Latch, type Scope } from "effect"
import type { Events } from "../../Observer.ts"
import type { Completer } from "../Completer.ts"
import { returned } from "../Outcome.ts"
import type { Running } from "../Running.ts"
import type { ClaimedJobRow, JobStore } from "../Store.ts"
import { jitter, type Resolved, type ResolvedQueue } from "./Config.ts"
import type { Executor } from "./Executor.ts"
import { info } from "./Executor.ts"
import { ClaimBuffer } from "./ClaimBuffer.ts"
import { ClaimFloor, ClaimFloorSettings } from "./ClaimFloor.ts"
import type { Held, HeldJobs } from "./Held.ts"

/** Adaptive prefetch: buffer about this much work (at the measured run rate) ... */
const prefetchHorizonMillis = 100
/**
 * The run rate is sampled over windows of at least this long: short, so that a worker that
 * starts on a backlog reaches its full claim size within a few claims (with 100 ms windows
 * a 5,000-job burst was mostly over before the first sample).
 */
const rateWindowMillis = 20
/** ... but never more than this many jobs. */
const maxAdaptivePrefetch = 1000
/**
 * A probe for better jobs than those buffered runs this long after the NOTIFY that asked for
 * it (see the header): at most 100 probes a second per queue, each at most this much later
 * than it could have been.
 */
const probeDelayMillis = 10
/** The lowest priority there is (a smallint): nothing can run before a job of this priority. */
const minPriority = -32768

export interface Producer {
  /** A NOTIFY for this queue arrived: there may be jobs. */
  readonly notify: () => void
  /** A run ended: its slot is free. */
  readonly release: () => void
  /** A run's outcome is written: with flow control, a fleet-wide slot is free now. */
  readonly written: () => void
  /** Removes a buffered (claimed, not started) job from the buffer; whether it was there. */
  readonly takeBuffered: (held: Held) => boolean
  /** Live controls: the settings now, new settings (taken at the next loop turn), stop after the current claim. */
  readonly config: () => ResolvedQueue
  readonly update: (queue: ResolvedQueue) => void
  readonly stop: () => void
  /** Re-arms a stopped producer (its queue was added back); fork its loop again. */
  readonly restart: () => void
  readonly counts: () => {
    readonly running: number
    readonly buffered: number
    readonly prefetch: number
    readonly waitingForOutcomes: boolean
  }
}

/** What a producer works with: the worker's parts it claims for, runs with and reports to. */
export interface Deps {
  readonly config: Resolved
  readonly store: JobStore["Service"]
  readonly observer: Events
  readonly completer: Completer
  readonly held: HeldJobs
  readonly running: Running
  readonly executor: Executor
  readonly isPaused: (queue: string) => boolean
}

/**
 * The prefetch in force. Adaptive (no prefetch configured): the runs finished per
 * millisecond, sampled at claims over windows of at least 20 ms and smoothed,
 * times the horizon; never below the configured floor (= concurrency).
 */
class Prefetch {
  value: number
  /** Runs finished so far. */
  finished = 0
  private sampledFinished = 0
  private sampledAt: number | undefined
  private rate = 0
  constructor(queue: ResolvedQueue) {
    this.value = queue.prefetch
  }
  /** New settings: an adaptive prefetch keeps what it learnt, above the new floor. */
  reset(next: ResolvedQueue) {
    this.value = next.adaptive ? Math.max(next.prefetch, this.value) : next.prefetch
  }
  /** At a claim: a new sample of the run rate, and the prefetch that follows. */
  update(queue: ResolvedQueue, now: number) {
    if (!queue.adaptive) {
      this.value = queue.prefetch
      return
    }
    if (this.sampledAt === undefined || now < this.sampledAt) {
      this.sampledAt = now
      this.sampledFinished = this.finished
    } else if (now - this.sampledAt >= rateWindowMillis) {
      const windowRate = (this.finished - this.sampledFinished) / (now - this.sampledAt)
      // smoothed, except the first sample (nothing to smooth with), which is taken as it is
      this.rate = this.rate === 0 ? windowRate : (this.rate + windowRate) / 2
      this.sampledAt = now
      this.sampledFinished = this.finished
    }
    this.value = Math.min(maxAdaptivePrefetch, Math.max(queue.prefetch, Math.ceil(this.rate * prefetchHorizonMillis)))
  }
}

/** Buffered jobs never started: give them back (attempt not spent, place in line kept). */
const giveBack = (taken: ReadonlyArray<Held>, { completer, held, observer }: Deps) =>
  Effect.forEach(taken, (h) => {
    held.remove(h)
    const row = h.row
    // (a job an operator cancelled meanwhile ends `cancelled` instead: report that)
    return completer.submit(returned(row).row, (applied) =>
      applied?.state === "cancelled"
        ? observer.cancelled(info(row), applied.cancelReason ?? "cancelled before it started")
        : Effect.void)
  }, { discard: true })

/** Makes the producer of one queue and its loop (to be forked; it gives back its buffer when it ends). */
export const make = Effect.fnUntraced(function*(initial: ResolvedQueue, deps: Deps) {
  const { completer, config, executor, held, observer, running, store } = deps
  let queue = initial // replaced by `update` (reconfigure, setConcurrency)
  let stopped = false
  const signal = yield* Latch.make(false)
  const buffer = new ClaimBuffer<Held>((h) => h.row.priority)
  let inFlight = 0
  let hungry = true
  let wakes = 0
  /** A NOTIFY or poll came since the last claim: better jobs than the buffered may be waiting. */
  let probeWanted = false
  /** The next probe: none planned, its delay running, or due at the next turn of the loop. */
  let probePlan: "none" | "waiting" | "ready" = "none"
  let waitingForOutcomes = false
  const prefetch = new Prefetch(initial)
  /** Where plain claims start reading the queue while full claims are expensive (ClaimFloor.ts). */
  const floor = new ClaimFloor(yield* ClaimFloorSettings)
  const producer: Producer = {
    notify: () => {
      wakes++
      hungry = true
      probeWanted = true
      signal.openUnsafe()
    },
    release: () => {
      inFlight--
      prefetch.finished++
      if (queue.flow !== undefined) {
        // The run's fleet-wide slot is free too (the gated claim does not count a run whose
        // outcome is still being written): a claim that came back short may find room now.
        wakes++
        hungry = true
      }
      signal.openUnsafe()
    },
    written: () => {
      // The gated claim counts the job running until its outcome is written: only now may a
      // claim that came back short (at a limit) find room again.
      if (queue.flow === undefined) return
      wakes++ // (a claim in flight that comes back short must not take the queue for drained)
      hungry = true
      signal.openUnsafe()
    },
    takeBuffered: (held) => {
      const found = buffer.remove(held)
      if (found) signal.openUnsafe()
      return found
    },
    config: () => queue,
    update: (next) => {
      queue = next
      prefetch.reset(next)
      hungry = true
      signal.openUnsafe()
    },
    stop: () => {
      stopped = true
      signal.openUnsafe()
    },
    restart: () => {
      stopped = false
      hungry = true
    },
    counts: () => ({ running: inFlight, buffered: buffer.length, prefetch: prefetch.value, waitingForOutcomes })
  }
  /**
   * With a global limit, the fleet's slots this worker holds (granted at its last claim,
   * migrations/0014): it runs at most that many jobs of the queue at once, and the rest of what
   * it claimed waits in the buffer. Undefined: no global limit, or no claim yet.
   */
  let slots: number | undefined = undefined
  /** How many jobs of the queue may run at once here. */
  const startLimit = () =>
    slots === undefined || queue.flow?.global === undefined ? queue.concurrency : Math.min(queue.concurrency, slots)
  const room = () => queue.concurrency + prefetch.value - inFlight - buffer.length
  const lowWater = () => Math.floor(prefetch.value / 2)

  /** Starts buffered jobs while there are free slots (each runs at once, up to its first async step). */
  const dispatch = Effect.sync(() => {
    const limit = startLimit()
    while (inFlight < limit && buffer.length > 0) {
      inFlight++
      const h = buffer.shift()!
      h.phase = "running"
      running.start(h.id, executor.run(h, producer))
    }
  })

  // The claim statement and the push of what it returned into the buffer are one step that
  // cannot be interrupted: a producer stopped in the middle of a claim (shutdown) finishes
  // it first, so that the jobs it claimed are in the buffer, where the loop's end gives them
  // back with their attempt. Interrupted between the two, the claimed jobs would be stranded
  // `running` until their leases lapsed, each losing an attempt (River claims with
  // `context.WithoutCancel` for the same reason).
  const claim = Effect.uninterruptible(Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    prefetch.update(queue, now)
    const limit = room()
    if (limit <= 0) return
    const wakesBefore = wakes
    probeWanted = false // this claim takes the best jobs there are now
    // The first `startNow` rows start at once (dispatch ran just before: the buffer is empty
    // if any slot is free); the rest wait in the buffer and are marked so (migrations/0011).
    const startNow = Math.max(0, startLimit() - inFlight - buffer.length)
    const options = {
      queue: queue.name,
      limit,
      now,
      leaseMillis: config.leaseMillis,
      workerId: config.workerId,
      names: executor.names, // only the jobs this worker can run (rolling deploys: docs/workers.md)
      startNow
    }
    // A queue with flow control claims through the gated claim (fleet-wide limits, round robin
    // over groups, sequences: migrations/0014), by default for its free slots only (prefetch 0,
    // Config.ts): then `limit` = `startNow` and nothing it claims waits in the buffer.
    let rows: ReadonlyArray<ClaimedJobRow>
    if (queue.flow === undefined) {
      const from = floor.plan(now)
      rows = yield* store.jobClaim({ ...options, floor: from })
      const durationMillis = (yield* Clock.currentTimeMillis) - now
      floor.record({ full: from === undefined, startedAt: now, durationMillis, short: rows.length < limit, rows })
    } else {
      // Runs that ended here but whose outcomes are still being written hold no slot: the claim
      // does not count them, so a slot is free as soon as a run ends, not one write later.
      const gated = yield* store.jobClaimGated({
        ...options,
        flow: queue.flow,
        done: held.writingOf(queue.name),
        concurrency: queue.concurrency,
        prefetch: prefetch.value,
        running: inFlight
      })
      rows = gated.rows
      slots = gated.slots
      // A rate limit held the claim back: look again when its window frees, not at the poll.
      rateWaitMillis = gated.waitMillis
      // A fleet-wide limit held jobs back: runs ending on other workers free them, and nothing
      // tells this worker when. Look again soon, backing off (5, 10, 20 ms ... up to the poll)
      // while it stays so: a worker with free slots beside a busy fleet does not wait a whole
      // poll for a group's next job, and a group blocked for long costs a few claims.
      if (gated.limited && rows.length < limit) {
        limitedWaitMillis = limitedWaitMillis === undefined ? 5 : Math.min(limitedWaitMillis * 2, queue.pollMillis)
      } else limitedWaitMillis = undefined
    }
    // by priority, then claim order (the statement sorts them)
    for (let i = 0; i < rows.length; i++) buffer.push(held.claim(rows[i]!, now + config.leaseMillis, i >= startNow))
    // A short claim means the queue is drained, unless a NOTIFY came in meanwhile.
    if (rows.length < limit && wakes === wakesBefore) hungry = false
  })).pipe(
    Effect.catchCause((cause) =>
      Effect.sync(() => {
        hungry = false // back off until the next poll or NOTIFY
      }).pipe(Effect.andThen(observer.workerError(queue.name, "claim failed", Cause.squash(cause), "Warn")))
    )
  )

  /** How long until the rate window that held the last gated claim back frees (undefined: none did). */
  let rateWaitMillis: number | undefined = undefined
  /** The backoff after gated claims a fleet-wide limit kept short (undefined: the last one was not). */
  let limitedWaitMillis: number | undefined = undefined
  const waitForPoll = Effect.suspend(() => {
    const poll = jitter(queue.pollMillis)
    const wait = Math.min(poll, rateWaitMillis ?? poll, limitedWaitMillis ?? poll)
    rateWaitMillis = undefined
    return Effect.sleep(wait)
  }).pipe(
    Effect.andThen(Effect.sync(() => {
      hungry = true
      probeWanted = true
    }))
  )

  /**
   * Whether a probe is wanted (see the header): a NOTIFY or poll came since the last claim,
   * the buffer holds jobs that something could beat, and the completer has room for what
   * the probe may give back. A plan made ready for a wish that is gone is dropped.
   */
  const probeWantedNow = () => {
    if (queue.flow !== undefined) return false // the probe's claim is the plain one: it knows no limits
    if (probeWanted && (buffer.length === 0 || buffer.worst()! <= minPriority)) {
      probeWanted = false // nothing buffered could be overtaken: the next claim takes the best
    }
    if (!probeWanted) {
      if (probePlan === "ready") probePlan = "none"
      return false
    }
    return completer.hasRoom()
  }

  /**
   * The probe's delay: a child of the loop's fiber, so it ends with the loop (and then leaves
   * no plan behind, so that a restarted producer can probe again).
   */
  const probeLater = Effect.forkChild(Effect.sleep(probeDelayMillis).pipe(Effect.onExit((exit) =>
    Effect.sync(() => {
      probePlan = Exit.isSuccess(exit) ? "ready" : "none"
      signal.openUnsafe()
    })
  )))

  // Uninterruptible like `claim`: what it claims is in the buffer before a stop can end the loop.
  const probe = Effect.uninterruptible(Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    probeWanted = false
    probePlan = "none"
    const limit = buffer.worstCount()
    const rows = yield* store.jobClaimAhead({
      queue: queue.name,
      priority: buffer.worst()!,
      limit,
      now,
      leaseMillis: config.leaseMillis,
      workerId: config.workerId,
      names: executor.names
    })
    for (const row of rows) buffer.push(held.claim(row, now + config.leaseMillis, true)) // ahead of the worst; buffered (startNow 0)
    // Over its room now by at most what it claimed: as many of the worst go back (all from
    // the worst priority, as the probe claimed no more than the buffer held of it).
    const over = Math.min(rows.length, -room())
    if (over > 0) yield* giveBack(buffer.popWorst(over), deps)
    if (rows.length === limit) {
      // There may be more: look again at once.
      probeWanted = true
      probePlan = "ready"
    }
  })).pipe(
    Effect.catchCause((cause) => observer.workerError(queue.name, "claim failed", Cause.squash(cause), "Warn"))
  )

  const loop = Effect.gen(function*() {
    while (!stopped) {
      signal.closeUnsafe()
      if (deps.isPaused(queue.name)) {
        // Paused: claim nothing, and give back what was claimed but not started (attempt
        // not spent) so that workers where the queue still runs can take it.
        yield* returnBuffered
        yield* signal.await // resume, new settings or stop
        continue
      }
      yield* dispatch
      if (hungry && room() > 0 && buffer.length <= lowWater()) {
        if (!completer.hasRoom()) {
          // Backpressure: too many outcomes not written yet. Wait for the backlog to halve,
          // or for anything else (a stop, new settings), then look again.
          waitingForOutcomes = true
          yield* Effect.raceFirst(completer.room, signal.await)
          waitingForOutcomes = false
          continue
        }
        yield* claim
        continue
      }
      if (probeWantedNow()) {
        if (probePlan === "ready") {
          yield* probe
          continue
        }
        if (probePlan === "none") {
          probePlan = "waiting"
          yield* probeLater
        }
      }
      if (hungry) yield* signal.await // full: wait for a slot
      else yield* Effect.raceFirst(signal.await, waitForPoll)
    }
  })

  /** Buffered jobs never started: give them back (attempt not spent). */
  const returnBuffered = Effect.suspend(() => giveBack(buffer.takeAll(), deps))

  return { producer, loop: loop.pipe(Effect.ensuring(returnBuffered)) }
})

/** The producers of a worker, by queue, and the fibers of their loops. */
export interface Producers {
  /** The producer of `queue` (also of a queue no longer served: its runs still release into it). */
  readonly get: (queue: string) => Producer | undefined
  /** Every producer this worker has had. */
  readonly all: () => Iterable<Producer>
  /** The queues served now. */
  readonly served: () => ReadonlyArray<string>
  readonly isServed: (queue: string) => boolean
  /** Starts serving a queue (a new producer, or a stopped one re-armed). */
  readonly start: (queue: ResolvedQueue) => Effect.Effect<void>
  /** Stops the producers of queues not in `keep`: each finishes its claim in flight and gives back its buffer. */
  readonly stopOthers: (keep: ReadonlySet<string>) => Effect.Effect<void>
  /**
   * Tells every claim loop to stop (shutdown) and returns their fibers: each ends after
   * the claim it may be in the middle of, and gives back its buffer.
   */
  readonly interruptAll: () => ReadonlyArray<Fiber.Fiber<unknown, unknown>>
  /** Removes a buffered job from its producer's buffer; whether it was there. */
  readonly takeBuffered: (held: Held) => boolean
  /** Wakes all producers, as a NOTIFY would. */
  readonly wakeAll: Effect.Effect<void>
}

export const makeProducers = Effect.fnUntraced(function*(deps: Deps) {
  /**
   * Every producer this worker has had, by queue. A queue removed by `reconfigure`
   * keeps its (stopped) producer, so its jobs still running release their slots
   * into it, and adding the queue back re-arms it with those counts.
   */
  const producers = new Map<string, Producer>()
  /** Claim loops of the queues served now. */
  const fibers = new Map<string, Fiber.Fiber<unknown, unknown>>()
  const loops = new Map<string, Effect.Effect<unknown>>()
  const workerScope: Scope.Scope = yield* Effect.scope
  const start = Effect.fnUntraced(function*(queue: ResolvedQueue) {
    let producer = producers.get(queue.name)
    if (producer === undefined) {
      const made = yield* make(queue, deps)
      producer = made.producer
      producers.set(queue.name, producer)
      loops.set(queue.name, made.loop)
    } else {
      producer.update(queue)
      producer.restart()
    }
    fibers.set(queue.name, yield* Effect.forkIn(loops.get(queue.name)!, workerScope))
  })
  const stopOthers = Effect.fnUntraced(function*(keep: ReadonlySet<string>) {
    const stopping: Array<Fiber.Fiber<unknown, unknown>> = []
    for (const [name, fiber] of fibers) {
      if (keep.has(name)) continue
      producers.get(name)!.stop()
      fibers.delete(name)
      stopping.push(fiber)
    }
    yield* Fiber.awaitAll(stopping)
  })
  const all: Producers = {
    get: (queue) => producers.get(queue),
    all: () => producers.values(),
    served: () => Array.from(fibers.keys()),
    isServed: (queue) => fibers.has(queue),
    start,
    stopOthers,
    interruptAll: () => {
      const loops = Array.from(fibers.values())
      for (const fiber of loops) fiber.interruptUnsafe()
      return loops
    },
    takeBuffered: (held) => producers.get(held.row.queue)?.takeBuffered(held) ?? false,
    wakeAll: Effect.sync(() => {
      for (const p of producers.values()) p.notify()
    })
  }
  return all
})
