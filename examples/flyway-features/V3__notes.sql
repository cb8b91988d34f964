CREATE TABLE notes (id bigint, account bigint REFERENCES accounts, body text);
