-- Browser bundles: a component transpiled (js-component-bindgen) into core
-- wasm modules and JavaScript glue, for browser contributors. One per
-- component digest; the files themselves are content-addressed in `blobs`.
CREATE TABLE browser_bundles (
    component_digest TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    built_at_ms BIGINT NOT NULL
);
