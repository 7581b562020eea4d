/**
 * Which waiting jobs no live worker would run: read by the maintenance leader
 * (maintenance/NoHandler.ts) every round and by `JobsAdmin.unserved`.
 *
 * A worker claims only the job names it has handlers for (aliases included), on the queues
 * it serves, and lists both in its registry row (migrations/0006, 0008). From the live rows:
 *
 *   - a queue with `available` jobs that no live worker serves is **unserved**: every worker of
 *     it is down, or none was ever started for it. An outage, not a missing handler;
 *   - a name waiting in a queue that live workers serve, none of which has its handler, is
 *     **unhandled** there: the rolling-deploy case (the worker with its handler is gone, or not
 *     deployed yet, or the job was removed from the code).
 *
 * Workers the registry does not show are accounted for as well as they can be: a worker
 * running with `listen: false` does not register, so a queue where such a worker holds running
 * jobs counts as served, by a worker that may handle any name; and so does a queue of a worker
 * whose row lists no names (a version before migrations/0008).
 *
 * Everything here is bounded and index-backed, whatever the size of the finished history: the
 * `workers` table, one descent of the claim index per queue with available jobs (at most
 * `maxQueues`), the first `headSize` runnable jobs of each served queue in claim order, and,
 * only when some queue looks unserved or some name unhandled, the running jobs (lease index). Jobs nobody claims stay
 * at the head of their queue (the claims take the others), so the head is where they are; a
 * job of an unhandled name behind more than `headSize` jobs that workers do run is found once
 * those are claimed.
 *
 * @internal
 */
import { Effect } from "effect"
import type { SqlError } from "effect/sql"
import type { JobStore } from "./Store.ts"

/** Runnable jobs of each queue looked at, in claim order, to find the names nobody handles. */
export const headSize = 100

/** Queues with available jobs looked at per survey, in name order. */
export const maxQueues = 1000

/** What one worker offers to run: its queues, and its job names (`null`: any name). */
export interface Offer {
  readonly queues: ReadonlyArray<string>
  readonly names: ReadonlyArray<string> | null
}

/** A queue's live offer: the names some live worker of it handles, or `"any"`. */
export type QueueOffer = ReadonlySet<string> | "any"

export interface Survey {
  /**
   * Whether any live worker is registered. Without one the registry says nothing (the whole
   * fleet is down, or restarting with the database, or every worker runs with `listen: false`).
   */
  readonly registered: boolean
  /** Each queue served by a live worker, with the names offered on it. */
  readonly served: ReadonlyMap<string, QueueOffer>
  /** Queues with available jobs that no live worker serves, in name order. */
  readonly unserved: ReadonlyArray<string>
  /** Names among the first `headSize` runnable jobs of a served queue that no live worker of it handles. */
  readonly unhandled: ReadonlyArray<{ readonly queue: string; readonly name: string; readonly n: number }>
}

/** The offers of the live workers, queue by queue. */
export const offersByQueue = (offers: ReadonlyArray<Offer>): Map<string, QueueOffer> => {
  const served = new Map<string, QueueOffer>()
  for (const offer of offers) {
    for (const queue of offer.queues) {
      const current = served.get(queue)
      if (current === "any") continue
      if (offer.names === null) {
        served.set(queue, "any")
        continue
      }
      const names = new Set(current)
      for (const name of offer.names) names.add(name)
      served.set(queue, names)
    }
  }
  return served
}

/** Whether `name` is offered on `queue`. */
export const isOffered = (served: ReadonlyMap<string, QueueOffer>, queue: string, name: string): boolean => {
  const offer = served.get(queue)
  return offer === "any" || (offer !== undefined && offer.has(name))
}

/**
 * One survey at `now`. `self` is the caller's own offer when it is a worker (the maintenance
 * leader): counted even if its registry row is missing (it runs with `listen: false`).
 */
export const survey = (
  store: JobStore["Service"],
  now: number,
  self?: Offer
): Effect.Effect<Survey, SqlError.SqlError> =>
  Effect.gen(function*() {
    const offers = yield* store.workerOffers
    const served = offersByQueue(self === undefined ? offers : [...offers, self])
    const available = yield* store.jobAvailableQueues(maxQueues)
    const known: Array<{ readonly queue: string; readonly offered: ReadonlyArray<string> }> = []
    for (const queue of available) {
      const offer = served.get(queue)
      if (offer !== undefined && offer !== "any") known.push({ queue, offered: [...offer] })
    }
    const unhandled = yield* store.jobUnhandledHead(known, now, headSize)
    // Only where something looks amiss: is a worker the registry does not show at work there?
    const suspect = [...new Set([...available.filter((queue) => !served.has(queue)), ...unhandled.map((u) => u.queue)])]
    for (const queue of yield* store.jobQueuesHeldUnregistered(suspect)) served.set(queue, "any")
    return {
      registered: offers.length > 0,
      served,
      unserved: available.filter((queue) => !served.has(queue)),
      unhandled: unhandled.filter((u) => served.get(u.queue) !== "any")
    }
  })
