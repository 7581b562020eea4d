/** Key prefix under which `Job.toLayer` puts handlers in the context, where the worker finds them. */
export const handlerKeyPrefix = "effect-jobs/Handler/"
