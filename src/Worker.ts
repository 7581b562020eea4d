/**
 * Worker: fibers that claim and run jobs, scoped to a layer.
 *
 * For each configured queue a producer fiber claims as many jobs as it has free
 * slots in one statement and forks one fiber per job. It claims again at once
 * while claims come back full; otherwise it waits for a NOTIFY on the
 * schema's `<schema>.new` channel (on the process's one LISTEN session, see
 * internal/Notifier.ts) or for its poll interval, whichever comes first.
 * Polling alone is enough (`listen: false`, for transaction-mode poolers);
 * NOTIFY only makes it fast.
 *
 * Every claim holds a lease (default 30 s) that one heartbeat fiber per worker
 * keeps extending for all the jobs it holds, in one statement. A job whose lease
 * lapsed (its worker died) is rescued by any worker's maintenance fiber and runs
 * again. Each claim carries a fencing token; all later writes about the run check
 * it, so a worker that lost a job can never overwrite the run that replaced it.
 *
 * Closing the layer's scope is a graceful shutdown: producers stop claiming,
 * running jobs get `gracePeriod` to finish, then they are interrupted and
 * returned to the queue with their attempt given back, and every outcome is
 * written before the scope closes.
 *
 * Live controls, on the `Worker` service the layer provides: `reconfigure`
 * replaces the set of queue configs (producers of removed queues stop claiming
 * and return the jobs they buffered, their running jobs finish as usual; new
 * queues start; kept queues take their new settings in place), `setConcurrency`
 * changes one queue's, `pause`/`resume` stop and restart claiming on this worker
 * or, with `{ global: true }`, on every worker (the `queues` table's `paused`
 * flag, which each worker reads every poll interval). No job is lost or run
 * twice by any of these: a job is claimed by exactly one producer, and a
 * producer that stops gives back only what it has not started.
 *
 * Every handler runs inside the default middleware stack: the job's request id
 * in context and in log annotations, and one span per run, child of the span
 * that enqueued the job (`defaultMiddleware: false` turns these off). Defects
 * (`Effect.die`, a throw) end the job `dead` with the cause, a `timeout` is a
 * retried failure, and metrics come from the `Observer` (`Observer.layer`):
 * those are not middleware and stay on. `middleware` adds your own wrappers.
 *
 * Settings that change at run time: a queue's `concurrency` and the worker's `retention`
 * may be given as an Effect (a `Setting`: a `Ref.get`, a `Config.Int(...)`, a read of
 * your own store) instead of a value. The worker reads it at startup (a read that fails,
 * or a value that is invalid, fails the layer with `InvalidWorkerConfig`) and again every
 * `settingsInterval`, applying a changed value as `setConcurrency` would; a later read that
 * fails, or gives an invalid value, is reported as a worker error and the value in force
 * is kept. See docs/workers.md, "Settings that change at run time".
 *
 * One worker at a time also prunes finished jobs past their retention (the
 * `pruner`; leader elected with a Postgres advisory lock, see
 * internal/maintenance/Leader.ts).
 *
 * @since 0.1.0
 */
import { Context, type Duration, type Effect, Layer } from "effect"
import type { InvalidWorkerConfig } from "./Errors.ts"
import { make } from "./internal/worker/Engine.ts"
import * as Notifier from "./internal/Notifier.ts"
import { JobStore } from "./internal/Store.ts"
import type { SqlError } from "effect/sql"
import type * as Job from "./Job.ts"

/**
 * A setting that may change while the worker runs: a value, or an Effect the worker reads at
 * startup and again every `settingsInterval` (a `Ref.get(ref)`, an `effect/Config` such as
 * `Config.Int("CONCURRENCY")`, a read of your own store). Its failures are reported, never
 * fatal once the worker runs: the value in force is kept. It needs no services (provide them
 * to the Effect first); it runs in the worker's context (its `ConfigProvider`, say).
 */
export type Setting<A> = A | Effect.Effect<A, unknown>

export interface QueueConfig {
  /**
   * Jobs of this queue run at once on this worker; default 1. A `Setting`: an Effect is
   * re-read every `settingsInterval` (see `Setting`).
   */
  readonly concurrency?: Setting<number> | undefined
  /** How often to look for jobs when no NOTIFY arrives; default 1 second. */
  readonly pollInterval?: Duration.Input | undefined
  /**
   * Jobs claimed ahead of free slots and held in a local buffer, so a slot that
   * frees starts the next job without a round trip. Default: adaptive, from
   * `concurrency` up to what this queue runs in about 100 ms (at most 1000): many
   * short jobs get big claims, slow jobs keep the buffer at `concurrency`. A number
   * fixes it; 0 claims only for free slots (fairest across workers).
   */
  readonly prefetch?: number | undefined
  /**
   * Fleet-wide flow control (docs/flow-control.md). A queue with any of these is claimed
   * through the gated claim: claims of the queue are serialized across the fleet, count the
   * jobs running on every worker, and go round the groups that have work (`EnqueueOptions.group`),
   * one job per group per turn. Every worker serving the queue must be given the same `flow`.
   * Such a queue claims only for free slots by default (`prefetch` 0, not adaptive): the
   * buffer starts jobs in claim order, whatever their group, so a small group's job would
   * wait behind a big group's buffered ones; a buffered job also holds its group's slot, and
   * a rate limit's token from its claim. (It holds no slot of `global`: a worker runs at most
   * the slots it was granted, and buffers the rest.) A `prefetch` set explicitly is kept:
   * short jobs drain several times faster, at that price.
   */
  readonly flow?: FlowOptions | undefined
}

/** `QueueConfig.flow`. Limits are integers of at least 1. */
export interface FlowOptions {
  /**
   * At most this many jobs of the queue run at once across every worker serving it. A
   * `Setting`: an Effect is re-read every `settingsInterval`.
   */
  readonly global?: Setting<number> | undefined
  /** At most this many jobs of one group run at once across every worker. */
  readonly perGroup?: number | undefined
  /**
   * Jobs of a group run one at a time in enqueue order. `true` = `{ onDead: "block" }`:
   * a dead job holds its group until an operator retries or deletes it; `"continue"`: the
   * next job of the group runs once one is dead.
   */
  readonly sequence?: boolean | { readonly onDead?: "block" | "continue" | undefined } | undefined
  /**
   * At most `limit` jobs of the queue start per `interval` across every worker (a fixed window
   * on the database's clock, Effect's `RateLimiter` "fixed-window" on the key
   * `RateLimiterStore.queueKey(queue)`): a job over the limit waits, available, no attempt spent.
   */
  readonly rate?: FlowRate | undefined
  /** The same for each group of the queue (key `RateLimiterStore.groupKey(queue, group)`). */
  readonly groupRate?: FlowRate | undefined
}

/** A rate limit of `QueueConfig.flow`: `limit` starts per `interval`. */
export interface FlowRate {
  readonly limit: number
  readonly interval: Duration.Input
}

export interface Options {
  readonly queues: Readonly<Record<string, QueueConfig>>
  /** Shown in `locked_by`; default `<hostname>:<pid>:<random>`. */
  readonly workerId?: string | undefined
  /** Time running jobs get to finish at shutdown before they are interrupted; default 10 seconds. */
  readonly gracePeriod?: Duration.Input | undefined
  /** How long a claim holds a job without a heartbeat; default 30 seconds. */
  readonly lease?: Duration.Input | undefined
  /** How often leases are extended; default a third of the lease. */
  readonly heartbeatInterval?: Duration.Input | undefined
  /** How often due scheduled jobs are promoted and lapsed leases rescued; default 1 second. */
  readonly maintenanceInterval?: Duration.Input | undefined
  /** LISTEN for new jobs; default true. Set false behind a transaction-mode pooler. */
  readonly listen?: boolean | undefined
  /** Outcomes written per statement at most; default 1000. */
  readonly maxCompletionBatch?: number | undefined
  /**
   * Backpressure: when this many outcomes are waiting to be written (the database
   * writes them more slowly than runs finish), producers stop claiming until the
   * backlog has halved. Default 10 × maxCompletionBatch.
   */
  readonly maxPendingOutcomes?: number | undefined
  /**
   * Deleting finished jobs whose retention ran out. One worker at a time does it
   * (the holder of a Postgres session advisory lock, on a connection it keeps
   * while it leads); the others take over when its session ends. `false`: this
   * worker never prunes (some other process must, or retention is not enforced).
   */
  readonly pruner?: false | PrunerOptions | undefined
  /**
   * How long a job may wait `available` while live workers serve its queue but none has a
   * handler for its name (nor an alias) before it goes `dead` with an error of kind
   * `NoHandler`; default 10 minutes, longer than most rolling deploys take. Checked by the
   * maintenance leader (the pruner's leader: a worker with `pruner: false` never checks), whose
   * setting applies: give every worker the same. Jobs of a queue that no live worker serves at
   * all are never sent to dead (that is an outage); such a queue is logged at Warn once it has
   * been so for this long (for 10 minutes with `Duration.infinity`). `Duration.infinity`: no
   * job is ever sent to dead for want of a handler. See docs/workers.md, "Rolling deploys".
   */
  readonly noHandlerTimeout?: Duration.Input | undefined
  /**
   * Retention of the jobs this worker finishes, over each job's own (`Job.make(..., { retention })`):
   * a finished job is deleted that long after it finished (0: a completed job is deleted at once;
   * `Duration.infinity`: kept). Applies to the outcomes this worker writes from now on, not to jobs
   * finished already, nor to jobs finished elsewhere (a rescue, `JobsAdmin.cancel`). Default: each
   * job's own. A `Setting`: an Effect is re-read every `settingsInterval`.
   */
  readonly retention?: Setting<Duration.Input> | undefined
  /** How often the settings given as Effects are read again (on Effect's `Clock`); default 1 second. */
  readonly settingsInterval?: Duration.Input | undefined
  /** Your wrappers around every handler run, innermost first; they run inside the default stack. */
  readonly middleware?: ReadonlyArray<Middleware> | undefined
  /**
   * The default stack around every handler: request id in context and log
   * annotations, a span per run linked to the enqueuing span. Default true.
   */
  readonly defaultMiddleware?: boolean | undefined
}

/** Wraps a handler run: `(run, job) => run.pipe(...)`. It sees the job's context; it must return the run's exit. */
export type Middleware = (
  run: Effect.Effect<unknown, unknown>,
  job: Job.JobContext
) => Effect.Effect<unknown, unknown>

/** A queue as this worker serves it now (`Worker.status`). */
export interface QueueStatus {
  readonly name: string
  readonly concurrency: number
  /** The prefetch in force (with the adaptive default, as adapted to the run rate now). */
  readonly prefetch: number
  readonly pollIntervalMillis: number
  /** Paused on this worker (`pause(queue)`). */
  readonly pausedLocally: boolean
  /** Paused for all workers, as this worker last read it (`pause(queue, { global: true })`). */
  readonly pausedGlobally: boolean
  /** Jobs of this queue running on this worker. */
  readonly running: number
  /** Jobs claimed and waiting for a free slot. */
  readonly buffered: number
  /**
   * Not claiming because too many outcomes of this worker wait to be written
   * (`maxPendingOutcomes`): the database is slower than the runs.
   */
  readonly waitingForOutcomes: boolean
}

/** The pruner's settings (`Options.pruner`). */
export interface PrunerOptions {
  /** How often the leader prunes expired jobs; default 5 seconds. */
  readonly interval?: Duration.Input | undefined
  /** Rows deleted per statement; default 10,000. */
  readonly batchSize?: number | undefined
  /** How often a node that does not lead tries to; default 5 seconds. */
  readonly electionInterval?: Duration.Input | undefined
}

/** This worker's part in pruning (`Worker.pruner`). With `pruner: false` it never leads. */
export interface Pruner {
  /** Whether this node leads now. */
  readonly isLeader: Effect.Effect<boolean>
  /** Waits until this node leads (at once if it does). */
  readonly awaitLeader: Effect.Effect<void>
  /** Waits until this node has stopped leading (at once if it does not lead). */
  readonly awaitFollower: Effect.Effect<void>
  /** Jobs pruned by this node so far. */
  readonly pruned: Effect.Effect<number>
  /** The `Clock` time whose expired jobs this node last finished pruning (undefined: never led). */
  readonly lastPrunedAt: Effect.Effect<number | undefined>
}

/** What a running worker offers: its id, its load, and the live controls. */
export interface Service {
  /** Shown in `locked_by` of the jobs it holds. */
  readonly workerId: string
  /** Wakes all producers, as a NOTIFY would. */
  readonly wake: Effect.Effect<void>
  /** Number of jobs this worker is running. */
  readonly running: Effect.Effect<number>
  /**
   * Replaces the queue configs (see the module header). Fails with
   * `InvalidWorkerConfig`, changing nothing, if the new configs are invalid.
   */
  readonly reconfigure: (queues: Readonly<Record<string, QueueConfig>>) => Effect.Effect<void, InvalidWorkerConfig>
  /**
   * Changes one queue's concurrency (its prefetch follows unless set explicitly). A concurrency
   * given as an Effect is replaced by this number: it is no longer re-read (`reconfigure` can give one again).
   */
  readonly setConcurrency: (queue: string, concurrency: number) => Effect.Effect<void, InvalidWorkerConfig>
  /** Stops claiming jobs of `queue` on this worker, or with `{ global: true }` on every worker. Running jobs finish. */
  readonly pause: (queue: string, options?: { readonly global?: boolean | undefined }) => Effect.Effect<void, PauseError>
  /** Undoes `pause` (the local flag, or with `{ global: true }` the flag for every worker). */
  readonly resume: (queue: string, options?: { readonly global?: boolean | undefined }) => Effect.Effect<void, PauseError>
  /** The queues served now, with their settings, pause flags and load. */
  readonly status: Effect.Effect<ReadonlyArray<QueueStatus>>
  /** This worker's part in pruning: whether it leads now, waiting for it to lead or follow, what it pruned. */
  readonly pruner: Pruner
}

/** `pause` and `resume` fail with these: a queue this worker does not serve, or the write of a global flag. */
export type PauseError = InvalidWorkerConfig | SqlError.SqlError

/** The worker service, provided by `layer`. */
export class Worker extends Context.Service<Worker, Service>()("effect-jobs/Worker") {}

/**
 * A worker as a layer: starts when the layer is built, shuts down gracefully
 * when it is released. Needs a `PgClient` and the handlers of the jobs it runs.
 */
export const layer = (options: Options) =>
  Layer.effect(Worker, make(options)).pipe(Layer.provide([JobStore.layer, Notifier.layer]))
