-- Which model made a result: its manifest's version and its file's sha256 (empty for results
-- indexed before results carried them).
ALTER TABLE chunk_results ADD COLUMN model_version TEXT NOT NULL DEFAULT '';
ALTER TABLE chunk_results ADD COLUMN model_sha256 TEXT NOT NULL DEFAULT '';
