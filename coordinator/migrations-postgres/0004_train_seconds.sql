-- Clients' local training wall time (TrainingMetrics::train_seconds): per participation, and
-- the round's sample-weighted mean. Without it a history replayed from the store (watch)
-- differed from the live event stream. Rows written before this migration hold NULL and
-- read as 0, which is what they used to read.
ALTER TABLE participations ADD COLUMN train_seconds DOUBLE PRECISION;
ALTER TABLE rounds ADD COLUMN train_seconds DOUBLE PRECISION;
