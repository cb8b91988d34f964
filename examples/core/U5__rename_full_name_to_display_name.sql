DROP VIEW customer_summaries;
ALTER TABLE customers RENAME COLUMN display_name TO full_name;
