CREATE OR REPLACE VIEW active_accounts AS SELECT id, name FROM accounts WHERE active;
