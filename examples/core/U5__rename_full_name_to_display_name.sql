-- The view depends on the column: drop it before renaming back.
DROP VIEW customer_summaries;
ALTER TABLE customers RENAME COLUMN display_name TO full_name;
