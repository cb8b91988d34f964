-- The index and the column go before the type they use.
DROP INDEX orders_open;
ALTER TABLE orders DROP COLUMN status;
DROP TYPE order_status;
