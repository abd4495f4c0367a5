-- Cost attribution: each completed round's measured cost per region, as JSON
-- ([{region, updates, update_bytes, broadcast_bytes, coordinator_cpu_seconds,
-- client_train_seconds, cost, currency}]), written with the round (see coordinator::cost).
ALTER TABLE rounds ADD COLUMN cost_json TEXT NOT NULL DEFAULT '[]';
