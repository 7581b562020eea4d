/**
 * The jobs this worker holds: claimed (buffered or running) or with an outcome on its
 * way, and what the worker knows of each: its fencing token, when its lease runs out,
 * whether it was lost or is being cancelled.
 *
 * @internal
 */

export class HeldJobs {
  /** Jobs held by this worker: id -> fencing token. The heartbeat extends exactly these. */
  readonly tokens = new Map<string, number>()
  /** Runs of jobs that were taken from this worker (lease lost): their outcome must not be written. */
  readonly lost = new Set<string>()
  /**
   * When the lease of each held job runs out as far as this worker knows: claim time +
   * lease, moved on by each heartbeat that reached the database. Removed when the run
   * ends (the lease watch also sweeps entries of jobs no longer held).
   */
  readonly leaseUntil = new Map<string, number>()
  /** Runs being interrupted because an operator cancelled their job: they end `cancelled`. */
  readonly cancelling = new Set<string>()
  /**
   * Runs that ended and whose outcome waits in the completer: id -> fencing token. Their
   * jobs stay held (heartbeated) until the outcome is written, so that a slow write
   * cannot let the lease lapse and the job be rescued and run again.
   */
  readonly writing = new Map<string, number>()

  /** A claim: the job is held until `until` unless a heartbeat extends it. */
  claimed(id: string, token: number, until: number) {
    this.tokens.set(id, token)
    this.leaseUntil.set(id, until)
  }

  /** After an outcome's write (or its giving up): the job is no longer ours to hold. */
  written(id: string, token: number) {
    if (this.writing.get(id) === token) this.writing.delete(id)
    if (this.tokens.get(id) === token) {
      this.tokens.delete(id)
      this.leaseUntil.delete(id)
    }
  }

  /** A run ended (its outcome, if any, handed to the completer). */
  ended(id: string, token: number) {
    // An outcome on its way keeps the job held until it is written (see `writing`).
    if (this.writing.get(id) !== token) {
      this.tokens.delete(id)
      this.leaseUntil.delete(id)
    }
    this.lost.delete(id)
    this.cancelling.delete(id)
  }
}
