-- Events counted per hour, kept by triggers in the transaction that changes an event, so the
-- summary reads at most a few thousand rows however many events there are. Each event counts
-- twice: under its camera, and under device '' (the whole account; device names are never
-- empty). `hour` is the unix ms of the UTC hour its start falls in.
CREATE TABLE event_counts (
    account  TEXT    NOT NULL,
    device   TEXT    NOT NULL,
    model    TEXT    NOT NULL,
    label    TEXT    NOT NULL,
    hour     BIGINT  NOT NULL,
    events   BIGINT  NOT NULL,
    PRIMARY KEY (account, device, label, hour, model)
);
CREATE INDEX event_counts_by_hour ON event_counts (account, device, hour);

INSERT INTO event_counts (account, device, model, label, hour, events)
    SELECT account, device, model, label, (start_at / 3600000) * 3600000, COUNT(*) FROM events
    GROUP BY account, device, model, label, (start_at / 3600000) * 3600000;
INSERT INTO event_counts (account, device, model, label, hour, events)
    SELECT account, '', model, label, (start_at / 3600000) * 3600000, COUNT(*) FROM events
    GROUP BY account, model, label, (start_at / 3600000) * 3600000;

CREATE TRIGGER event_counts_insert AFTER INSERT ON events BEGIN
    INSERT INTO event_counts (account, device, model, label, hour, events)
        VALUES (NEW.account, NEW.device, NEW.model, NEW.label, (NEW.start_at / 3600000) * 3600000, 1),
               (NEW.account, '', NEW.model, NEW.label, (NEW.start_at / 3600000) * 3600000, 1)
        ON CONFLICT (account, device, label, hour, model) DO UPDATE SET events = events + 1;
END;

CREATE TRIGGER event_counts_delete AFTER DELETE ON events BEGIN
    UPDATE event_counts SET events = events - 1
        WHERE account = OLD.account AND device IN (OLD.device, '') AND model = OLD.model
          AND label = OLD.label AND hour = (OLD.start_at / 3600000) * 3600000;
END;

CREATE TRIGGER event_counts_update AFTER UPDATE OF account, device, model, label, start_at ON events
WHEN (OLD.start_at / 3600000) <> (NEW.start_at / 3600000) OR OLD.label <> NEW.label
  OR OLD.device <> NEW.device OR OLD.model <> NEW.model OR OLD.account <> NEW.account
BEGIN
    UPDATE event_counts SET events = events - 1
        WHERE account = OLD.account AND device IN (OLD.device, '') AND model = OLD.model
          AND label = OLD.label AND hour = (OLD.start_at / 3600000) * 3600000;
    INSERT INTO event_counts (account, device, model, label, hour, events)
        VALUES (NEW.account, NEW.device, NEW.model, NEW.label, (NEW.start_at / 3600000) * 3600000, 1),
               (NEW.account, '', NEW.model, NEW.label, (NEW.start_at / 3600000) * 3600000, 1)
        ON CONFLICT (account, device, label, hour, model) DO UPDATE SET events = events + 1;
END;
