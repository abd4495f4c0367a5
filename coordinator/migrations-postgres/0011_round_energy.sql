-- Carbon-aware scheduling: each completed round's estimated energy and carbon per region,
-- as JSON ([{region, compute_seconds, energy_kwh, carbon_g}]), written with the round.
ALTER TABLE rounds ADD COLUMN energy_json TEXT NOT NULL DEFAULT '[]';
