-- The last heartbeat of each device (POST /devices/heartbeat) and the facts it carried.
CREATE TABLE device_heartbeats (
    account     TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    at          BIGINT  NOT NULL,  -- unix milliseconds, vault clock
    facts       TEXT    NOT NULL,  -- JSON: the heartbeat fields Osprey keeps
    PRIMARY KEY (account, device)
);
