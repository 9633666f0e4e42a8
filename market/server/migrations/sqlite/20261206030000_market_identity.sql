-- This market's id, named in every signed request so that one captured on
-- another market cannot be replayed here (agora_wire::auth). Random, made
-- once with the database: every replica on it shares it.
CREATE TABLE market_identity (id TEXT PRIMARY KEY);
INSERT INTO market_identity (id) VALUES ('m' || lower(hex(randomblob(16))));
