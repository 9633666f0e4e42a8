//! What a buyer reads: a job's info with its units a page at a time, and
//! the buyer's list of jobs.

use crate::jobs::{answer, job, lease, provider, publish, run_all, submit};
use crate::*;
use std::time::Duration;

// A buyer's list of jobs is paged and each line is read in one query (not
// a whole job with all its units per line); nobody else's jobs appear.
both_dbs!(a_buyers_job_list_is_paged, async |m: &TestMarket| {
    publish(m, "saxpy").await;
    let (buyer, other) = (Keypair::generate(), Keypair::generate());
    m.fund(&buyer, 10_000).await;
    m.fund(&other, 10_000).await;
    let first = submit(m, &buyer, "saxpy", &[b"a", b"b"], 600, 1).await;
    run_all(m, &provider(m, 1).await, |_| b"out".to_vec()).await;
    m.state.advance_clock(Duration::from_millis(5));
    submit(m, &buyer, "saxpy", &[b"c"], 600, 1).await;
    m.state.advance_clock(Duration::from_millis(5));
    let newest = submit(m, &buyer, "saxpy", &[b"d", b"e", b"f"], 600, 1).await;
    submit(m, &other, "saxpy", &[b"g"], 600, 1).await;
    let (status, page) = m
        .call("GET", "/api/v1/jobs?per_page=2", None, Some(&buyer))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (
            page["total"].as_u64(),
            page["items"].as_array().unwrap().len()
        ),
        (Some(3), 2),
        "{page}"
    );
    assert_eq!(
        (
            page["items"][0]["id"].as_str(),
            page["items"][0]["units"].as_u64()
        ),
        (Some(newest.as_str()), Some(3))
    );
    let (_, last) = m
        .call("GET", "/api/v1/jobs?per_page=2&page=1", None, Some(&buyer))
        .await;
    let only = &last["items"][0];
    assert_eq!(
        (
            only["id"].as_str(),
            only["units"].as_u64(),
            only["units_verified"].as_u64(),
            only["state"].as_str()
        ),
        (Some(first.as_str()), Some(2), Some(2), Some("done")),
        "{last}"
    );
    let (_, huge) = m
        .call("GET", "/api/v1/jobs?per_page=100000", None, Some(&buyer))
        .await;
    assert_eq!(
        huge["per_page"], 100,
        "a page has at most MAX_JOBS_PER_PAGE"
    );
});

// A job's info carries one page of its units (100 unless the reader asks,
// never more than 1,000), with counts of every state and the cost over all
// of them: a 1,001-unit job is never read, sent or held whole. The pages
// together are the job: every unit once, in order, the counts and costs
// they show add up to the job's.
both_dbs!(
    a_jobs_units_are_read_a_page_at_a_time,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 100_000).await;
        let inputs: Vec<Vec<u8>> = (0..1_001)
            .map(|i| format!("input {i}").into_bytes())
            .collect();
        let id = submit(
            m,
            &buyer,
            "saxpy",
            &inputs.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            50_000,
            1,
        )
        .await;
        let p = provider(m, 1).await;
        for _ in 0..3 {
            let grant = lease(m, &p).await.expect("a queued unit");
            assert_eq!(answer(m, &p, &grant, Ok(b"done")).await.0, StatusCode::OK);
        }
        let running = lease(m, &p).await.expect("a queued unit")["unit"]
            .as_u64()
            .unwrap();

        let first = job(m, &buyer, &id).await;
        assert_eq!(
            (
                first["units"].as_array().unwrap().len(),
                first["units_next"].as_u64()
            ),
            (100, Some(100)),
            "the first page by default"
        );
        let counts = first["unit_counts"].clone();
        assert_eq!(
            (
                counts["total"].as_u64(),
                counts["verified"].as_u64(),
                counts["running"].as_u64()
            ),
            (Some(1_001), Some(3), Some(1)),
            "{counts}"
        );

        let reader = &buyer;
        let page = |from: String, limit: &str| {
            let path = format!("/api/v1/jobs/{id}?units_from={from}&units_limit={limit}");
            async move { m.call("GET", &path, None, Some(reader)).await }
        };
        let (mut seen, mut next, mut pages) = (Vec::new(), Some(0), 0);
        while let Some(from) = next {
            let (status, info) = page(from.to_string(), "100000").await;
            assert_eq!(status, StatusCode::OK, "{info}");
            let units = info["units"].as_array().unwrap();
            assert!(
                units.len() <= 1_000,
                "a page holds at most MAX_UNITS_PER_PAGE"
            );
            assert_eq!(
                info["unit_counts"], counts,
                "every page counts the whole job"
            );
            seen.extend(units.iter().cloned());
            next = info["units_next"].as_u64();
            pages += 1;
        }
        assert_eq!(pages, 2);
        let indexes: Vec<u64> = seen.iter().map(|u| u["index"].as_u64().unwrap()).collect();
        assert_eq!(
            indexes,
            (0..1_001).collect::<Vec<_>>(),
            "each unit once, in order"
        );
        let in_state = |state: &str| seen.iter().filter(|u| u["state"] == state).count() as u64;
        for state in ["queued", "running", "verifying", "verified", "failed"] {
            assert_eq!(in_state(state), counts[state].as_u64().unwrap(), "{state}");
        }
        assert_eq!(seen[running as usize]["state"], "running");
        let unit_costs: u64 = seen.iter().filter_map(|u| u["cost"].as_u64()).sum();
        let cost = &first["cost"];
        assert!(unit_costs > 0);
        assert_eq!(
            unit_costs,
            cost["paid_to_providers"].as_u64().unwrap() + cost["fees"].as_u64().unwrap(),
            "{cost}"
        );

        let (_, past_the_end) = page(u32::MAX.to_string(), "10").await;
        assert_eq!(
            (
                past_the_end["units"].as_array().unwrap().len(),
                &past_the_end["units_next"]
            ),
            (0, &Value::Null)
        );
        let (_, one) = page("7".into(), "0").await;
        assert_eq!(
            one["units"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["index"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [7],
            "a page holds one unit at least"
        );
        let (status, _) = page("-1".into(), "10").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
);
