-- The re-analysis job that last made a result (NULL: live analysis only), so a job counts its
-- own results, not those other groups index over its range meanwhile.
ALTER TABLE chunk_results ADD COLUMN reanalyse_job BIGINT;
CREATE INDEX chunk_results_reanalyse_job ON chunk_results (reanalyse_job);
