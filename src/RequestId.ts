/**
 * The request id of the work in progress.
 *
 * Set it around request handling (`Effect.provideService(RequestId, id)`); a job
 * enqueued there stores it, and its handler runs with it set again and with a
 * `requestId` log annotation, so one id follows the work from the request into
 * the background. A job enqueued with no request id gets a fresh one.
 *
 * @since 0.1.0
 */
import { Context } from "effect"

export const RequestId = Context.Reference<string | undefined>("effect-jobs/RequestId", {
  defaultValue: () => undefined
})
