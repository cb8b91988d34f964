DROP VIEW IF EXISTS active_accounts;
DROP FUNCTION IF EXISTS account_count();
DROP TABLE accounts;
