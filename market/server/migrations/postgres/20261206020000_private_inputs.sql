-- A unit's input is readable by its buyer and its leaseholders only: found
-- by digest, then its job's buyer checked.
CREATE INDEX units_by_input ON units (input_digest, job_id);
