/**
 * The bookkeeping of one enqueue batch with unique keys (no SQL: the statements are the store's).
 *
 * The rows of a batch that share a name and key go to the database as one row: a second row
 * of the key would only be a duplicate of the first (or, with `replace`, overwrite it), and an
 * UPDATE cannot change one row twice in a statement. Each such group is settled once, by the
 * database's answer for its row, and every member gets the outcome it would have had had the
 * batch been enqueued one job at a time, in order.
 */
import type { InsertOutcome, JobState, NewJobRow } from "./Store.ts"

/** A row to send: one job without a key, or the merged row of a key's group. */
export interface Pending {
  readonly row: NewJobRow
  /** The positions in the batch this row answers for (the first is where the row stands). */
  readonly members: ReadonlyArray<number>
}

/** One row of the insert statement's answer. */
export interface Returned {
  readonly id: string
  readonly name: string
  readonly unique_key: string | null
  /** The waiting job of the key was updated (replace), rather than a new row inserted. */
  readonly replaced: boolean
}

/** The job holding a key, for a conflicted row (by its position in the list looked up). */
export interface Holder {
  readonly ord: number
  readonly id: string
  readonly state: JobState
}

const keyOf = (row: NewJobRow) => `${row.name}\u0000${row.unique_key}`

/**
 * A later row of a key's group with `replace`, merged into the group's row: its values win (last
 * write), but the key's window and states stay those of the first row, and with "keepRunAt" the
 * run time stays the one the group had (or, if nothing in the group set it yet, the waiting job's:
 * the merged row keeps "keepRunAt" unless an earlier member replaced everything).
 */
const merge = (sent: NewJobRow, later: NewJobRow): NewJobRow => {
  const keepRunAt = later.replace === "keepRunAt"
  return {
    ...later,
    unique_states: sent.unique_states ?? null,
    unique_window: sent.unique_window ?? null,
    run_at: keepRunAt ? sent.run_at : later.run_at,
    state: keepRunAt ? sent.state : later.state,
    replace: keepRunAt ? (sent.replace ?? "keepRunAt") : "all"
  }
}

export const make = (rows: ReadonlyArray<NewJobRow>) => {
  const results: Array<InsertOutcome | undefined> = new Array(rows.length)
  const groups = new Map<string, { row: NewJobRow; readonly members: Array<number> }>()
  const order: Array<{ row: NewJobRow; readonly members: Array<number> }> = []
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!
    if (row.unique_key === null) {
      order.push({ row, members: [i] })
      continue
    }
    const key = keyOf(row)
    const group = groups.get(key)
    if (group === undefined) {
      const created = { row, members: [i] }
      groups.set(key, created)
      order.push(created)
    } else {
      group.members.push(i)
      if (row.replace != null) group.row = merge(group.row, row)
    }
  }

  /** Gives each member of a settled group its outcome (see the module header). */
  const settle = (p: Pending, id: string, outcome: InsertOutcome["outcome"]) => {
    for (let m = 0; m < p.members.length; m++) {
      const index = p.members[m]!
      const replaces = rows[index]!.replace != null
      results[index] = {
        id,
        outcome: outcome === "duplicate"
          ? "duplicate"
          : m === 0
          ? (outcome === "inserted" ? "inserted" : replaces ? "replaced" : "duplicate")
          : replaces
          ? "replaced"
          : "duplicate"
      }
    }
  }

  return {
    /** The rows to send first: one per job without a key and one per key, in batch order. */
    pending: order as ReadonlyArray<Pending>,
    /**
     * Settles what the insert statement inserted or replaced; returns the keyed rows it did
     * neither for (a job of the key holds it).
     */
    applyReturned: (pending: ReadonlyArray<Pending>, returned: ReadonlyArray<Returned>): ReadonlyArray<Pending> => {
      const byKey = new Map<string, Returned>()
      const plain: Array<Returned> = []
      for (const r of returned) {
        if (r.unique_key === null) plain.push(r)
        else byKey.set(`${r.name}\u0000${r.unique_key}`, r)
      }
      let next = 0
      const conflicted: Array<Pending> = []
      for (const p of pending) {
        if (p.row.unique_key === null) {
          // Rows without a key are never skipped, and come back in the order they were sent.
          const r = plain[next++]
          if (r === undefined) throw new Error(`enqueue: ${plain.length} jobs without a key came back, more were sent`)
          results[p.members[0]!] = { id: r.id, outcome: "inserted" }
          continue
        }
        const r = byKey.get(keyOf(p.row))
        if (r === undefined) conflicted.push(p)
        else settle(p, r.id, r.replaced ? "replaced" : "inserted")
      }
      return conflicted
    },
    /**
     * Settles the conflicted rows whose key is held (`holders`, by position in `conflicted`) as
     * duplicates; returns those to send again: the holder finished (or was deleted) meanwhile, or
     * it is waiting and the row replaces it (it was not visible to the statement's UPDATE: its
     * transaction committed after the statement began).
     */
    applyHolders: (conflicted: ReadonlyArray<Pending>, holders: ReadonlyArray<Holder>): ReadonlyArray<Pending> => {
      const byOrd = new Map(holders.map((h) => [h.ord, h]))
      const again: Array<Pending> = []
      conflicted.forEach((p, ord) => {
        const holder = byOrd.get(ord)
        if (holder === undefined) again.push(p)
        else if (p.row.replace != null && (holder.state === "scheduled" || holder.state === "available")) again.push(p)
        else settle(p, holder.id, "duplicate")
      })
      return again
    },
    results: () => results as ReadonlyArray<InsertOutcome>
  }
}
