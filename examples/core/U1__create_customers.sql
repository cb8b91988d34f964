-- Also drops the identity sequence and the unique index.
DROP TABLE customers;
