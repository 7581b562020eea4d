/**
 * Short delays, honoured: a retry or snooze this worker wrote `scheduled` for a time sooner
 * than its maintenance would get to it is promoted by this worker when it falls due, and the
 * producer of its queue woken, instead of waiting for the next maintenance round (every
 * `maintenanceInterval`, 1 s by default: a 200 ms backoff used to wait about a second).
 *
 * Due times are rounded up to a slot of `slotMillis`, and one timer (one fiber, for every
 * queue) waits for the earliest slot. When it falls due, one statement promotes the due
 * jobs of the queues that have something in that slot (`jobPromoteDue`), and their producers
 * are woken (its NOTIFY wakes the other workers). A burst of retries therefore costs one
 * statement per slot, not one per job, and nothing at all is added to a run that does not
 * end in a delay shorter than the maintenance interval. A retry runs at most a slot (plus
 * the statement and the claim) after its time, and never before it. Longer delays are left
 * to maintenance, as are the retries of a worker that stops or dies before they are due:
 * the promotion here only makes them sooner, never certain.
 *
 * The timer runs on Effect's `Clock`, as the rest of the worker: on a `TestClock`, it falls
 * due when the clock is moved past it.
 *
 * @internal
 */
import { Cause, Clock, Effect, Latch } from "effect"
import type { Events } from "../../Observer.ts"
import type { JobStore } from "../Store.ts"

/** Due times are rounded up to this: at most one promotion per queue per slot. */
const slotMillis = 10
/** Jobs promoted per statement at most (as the promoter); a longer list is taken in turns. */
const batchSize = 1000

export interface DueTimers {
  /** A retry or snooze of `queue` was written `scheduled` for `runAt` (epoch milliseconds). */
  readonly scheduled: (queue: string, runAt: number) => void
}

/** Forks the timer's fiber in the current scope. */
export const make = Effect.fnUntraced(function*(deps: {
  readonly store: JobStore["Service"]
  readonly observer: Events
  /** The worker's clock, read synchronously when an outcome is written. */
  readonly clock: Clock.Clock
  /** Delays at least this long are left to maintenance (its interval). */
  readonly horizonMillis: number
  /** Wakes the producer of a queue, as a NOTIFY would. */
  readonly wake: (queue: string) => void
}) {
  const { clock, horizonMillis, observer, store, wake } = deps
  /** Slot (epoch ms) to the queues with a job due then. Few: at most horizon / slot. */
  const slots = new Map<number, Set<string>>()
  let earliest = Infinity
  const changed = yield* Latch.make(false)

  const scheduled = (queue: string, runAt: number) => {
    if (runAt - clock.currentTimeMillisUnsafe() >= horizonMillis) return
    const slot = Math.ceil(runAt / slotMillis) * slotMillis
    let queues = slots.get(slot)
    if (queues === undefined) slots.set(slot, queues = new Set())
    queues.add(queue)
    if (slot < earliest) {
      earliest = slot
      changed.openUnsafe()
    }
  }

  /** The queues of every slot due by `now`, taken out; `earliest` moves to the next slot. */
  const takeDue = (now: number): Array<string> => {
    const due = new Set<string>()
    let next = Infinity
    for (const [slot, queues] of slots) {
      if (slot <= now) {
        for (const q of queues) due.add(q)
        slots.delete(slot)
      } else if (slot < next) next = slot
    }
    earliest = next
    return Array.from(due)
  }

  const promote = (queues: ReadonlyArray<string>, now: number) =>
    Effect.gen(function*() {
      while ((yield* store.jobPromoteDue(queues, now, batchSize)) >= batchSize) {
        // a full batch: there may be more
      }
      for (const queue of queues) wake(queue)
    }).pipe(
      // Maintenance promotes them anyway, a little later.
      Effect.catchCause((cause) => observer.workerError(queues.join(","), "promotion of due retries failed", Cause.squash(cause), "Warn"))
    )

  yield* Effect.forkScoped(Effect.gen(function*() {
    while (true) {
      changed.closeUnsafe()
      if (earliest === Infinity) {
        yield* changed.await
        continue
      }
      const now = yield* Clock.currentTimeMillis
      if (earliest > now) {
        // woken early by a sooner slot (`changed`), or at this one
        yield* Effect.raceFirst(Effect.sleep(earliest - now), changed.await)
        continue
      }
      yield* promote(takeDue(now), now)
    }
  }))

  return { scheduled } satisfies DueTimers
})
