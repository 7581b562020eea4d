-- effect-jobs schema, version 7: each periodic schedule's definition, next to its last slot.
--
-- A scheduler (src/Periodic.ts) writes its schedule's job name, queue and cron (with its
-- time zone) or interval here each time it registers the schedule, so that a process that
-- does not declare the schedules (the dashboard, `effect-jobs dashboard`) can show them and
-- compute their next slots. The columns are NULL for a row registered by an older version
-- until a scheduler of this version registers it; the last registration wins.
ALTER TABLE effect_jobs.periodic
  ADD COLUMN job       text,
  ADD COLUMN queue     text,
  ADD COLUMN cron      text,
  ADD COLUMN time_zone text,
  ADD COLUMN every_ms  bigint;
