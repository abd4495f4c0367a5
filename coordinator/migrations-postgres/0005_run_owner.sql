-- Who submitted the run: the certified identity URI (fedra://scientist/alice), or NULL for
-- runs submitted before identities existed or to a coordinator running with --insecure.
ALTER TABLE runs ADD COLUMN owner TEXT COLLATE "C";
