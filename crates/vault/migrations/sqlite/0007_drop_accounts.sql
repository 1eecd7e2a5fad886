-- Accounts live in the config and nothing read this copy of them (it also kept an unsalted
-- hash of each secret): dropped.
DROP TABLE accounts;
