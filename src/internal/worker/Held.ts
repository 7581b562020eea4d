/**
 * The jobs this worker holds, one record per claim: from the claim until the run's
 * outcome is written, the job given back, or its lease lost.
 *
 * A record is keyed by the job's id but belongs to one claim (its fencing token,
 * `claim_count`): a job lost and then claimed again by this same worker gets a new
 * record, and the old run (still being stopped) keeps the old one, marked `lost`, so
 * neither can change what the other may write.
 *
 * Phases of a record, in prose:
 *   buffered  claimed, waiting in its producer's buffer for a free slot;
 *   running   its handler runs (started by the producer's dispatch);
 *   writing   the run ended and its outcome waits in the completer. The job stays held
 *             (heartbeated) until the outcome is written, so that a slow write cannot let
 *             the lease lapse and the job be rescued and run again.
 * A record leaves the set when its outcome is written (or given up), when a run ends
 * with nothing to write, when a buffered job is given back or cancelled, and when its
 * lease is lost (the heartbeat found the job taken, or the lease watch saw it lapse).
 *
 * @internal
 */
import type { ClaimedJobRow } from "../Store.ts"

export type Phase = "buffered" | "running" | "writing"

/** One claim of one job. */
export class Held {
  phase: Phase = "buffered"
  /** Taken from this worker (lease lost): nothing of this run may be written. */
  lost = false
  /** Being interrupted because an operator cancelled the job: the run ends `cancelled`. */
  cancelling = false
  readonly row: ClaimedJobRow
  /**
   * When the lease runs out as far as this worker knows: claim time + lease, moved on
   * by each heartbeat that reached the database.
   */
  leaseUntil: number
  /**
   * The row is marked `buffered` (migrations/0011): claimed past the free slots, and not yet
   * reported started. Cleared by the registration beat once the job started from the buffer
   * (Registration.ts), so a rescue after this worker's death gives back only the attempts
   * of jobs it never started (give or take one beat).
   */
  markedBuffered: boolean
  constructor(row: ClaimedJobRow, leaseUntil: number, markedBuffered: boolean) {
    this.row = row
    this.leaseUntil = leaseUntil
    this.markedBuffered = markedBuffered
  }
  get id(): string {
    return this.row.id
  }
  /** The fencing token: every write about this run carries it. */
  get token(): number {
    return this.row.claim_count
  }
}

export class HeldJobs {
  private readonly byId = new Map<string, Held>()

  get size(): number {
    return this.byId.size
  }
  /** The record of the claim of `id` this worker holds now, if any. */
  get(id: string): Held | undefined {
    return this.byId.get(id)
  }
  /** Every record held now (a copy: the caller may change the set as it goes). */
  all(): Array<Held> {
    return Array.from(this.byId.values())
  }
  ids(): Array<string> {
    return Array.from(this.byId.keys())
  }
  /**
   * The jobs of `queue` whose runs have ended and whose outcomes are not written yet: they
   * hold no slot any more, though their rows still say `running` (the gated claim, Producer.ts).
   */
  writingOf(queue: string): Array<string> {
    const ids: Array<string> = []
    for (const h of this.byId.values()) if (h.phase === "writing" && !h.lost && h.row.queue === queue) ids.push(h.id)
    return ids
  }
  /** The jobs started from the buffer whose row still says `buffered`: for the next beat. */
  startedMarked(): Array<Held> {
    const started: Array<Held> = []
    for (const h of this.byId.values()) if (h.markedBuffered && h.phase === "running" && !h.lost) started.push(h)
    return started
  }

  /**
   * A claim: the job is held, buffered, until `leaseUntil` unless a heartbeat extends it;
   * `markedBuffered` as the claim set the row (not among the jobs that start at once).
   */
  claim(row: ClaimedJobRow, leaseUntil: number, markedBuffered = false): Held {
    const h = new Held(row, leaseUntil, markedBuffered)
    // A record of an older claim still here: the job was taken from this worker before the
    // heartbeat noticed. That run's writes are refused by its token; it must write nothing.
    const older = this.byId.get(row.id)
    if (older !== undefined) older.lost = true
    this.byId.set(row.id, h)
    return h
  }
  /** Whether `h` is the record held now for its job (not one replaced by a newer claim). */
  isCurrent(h: Held): boolean {
    return this.byId.get(h.id) === h
  }
  /** The job of `h` is no longer ours to hold (a newer claim's record stays). */
  remove(h: Held): void {
    if (this.byId.get(h.id) === h) this.byId.delete(h.id)
  }
  /** The job was taken from this worker: its run must write nothing. */
  lose(h: Held): void {
    h.lost = true
    this.remove(h)
  }
}
