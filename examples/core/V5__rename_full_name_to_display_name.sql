-- A column rename, and a view that uses the new name.
ALTER TABLE customers RENAME COLUMN full_name TO display_name;

CREATE VIEW customer_summaries AS
SELECT c.id, c.display_name, c.order_count,
       coalesce(sum(o.total_cents), 0) AS lifetime_cents
  FROM customers c
  LEFT JOIN orders o ON o.customer_id = c.id
 GROUP BY c.id, c.display_name, c.order_count;
