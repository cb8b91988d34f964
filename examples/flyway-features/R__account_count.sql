CREATE OR REPLACE FUNCTION account_count() RETURNS bigint LANGUAGE sql
AS $$ SELECT count(*) FROM accounts $$;
