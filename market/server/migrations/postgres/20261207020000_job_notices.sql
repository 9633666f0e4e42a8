-- A notice on channel `agora_job`, its payload the job's id, whenever a job,
-- its units, leases or log lines change: event streams on every replica
-- wake at once instead of polling (`feeds.rs`). Identical notices of one
-- transaction are delivered once.
CREATE FUNCTION agora_job_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('agora_job', NEW.id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE FUNCTION agora_job_part_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('agora_job', NEW.job_id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_notice AFTER INSERT OR UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION agora_job_changed();
CREATE TRIGGER units_notice AFTER INSERT OR UPDATE ON units FOR EACH ROW EXECUTE FUNCTION agora_job_part_changed();
CREATE TRIGGER leases_notice AFTER INSERT OR UPDATE ON leases FOR EACH ROW EXECUTE FUNCTION agora_job_part_changed();
CREATE TRIGGER unit_logs_notice AFTER INSERT ON unit_logs FOR EACH ROW EXECUTE FUNCTION agora_job_part_changed();
