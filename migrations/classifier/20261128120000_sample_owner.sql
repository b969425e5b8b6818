-- Whose correction a feedback sample is, so a training run can bound each user's part in it
-- (a cap on samples per user per snapshot and a cap on their total weight).
ALTER TABLE samples ADD COLUMN owner text;
UPDATE samples s SET owner = f.owner FROM feedback f WHERE s.source = 2 AND s.origin = f.id::text;
