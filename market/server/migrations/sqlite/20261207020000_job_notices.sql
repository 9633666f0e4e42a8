-- PostgreSQL only: a notice on channel `agora_job` whenever a job, its
-- units, leases or log lines change, so event streams wake at once
-- (`feeds.rs`). SQLite markets are one process and poll.
SELECT 1;
