-- When the job's buyer cancelled it (none while it was not cancelled): its
-- end, whenever its settlement runs, is `cancelled`.
ALTER TABLE jobs ADD COLUMN cancelled_at_ms BIGINT;
