-- Events counted per hour, kept by a trigger in the transaction that changes an event, so the
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

CREATE FUNCTION event_counts_add(a TEXT, d TEXT, m TEXT, l TEXT, start_at BIGINT, n BIGINT) RETURNS void AS $$
    INSERT INTO event_counts (account, device, model, label, hour, events)
        VALUES (a, d, m, l, (start_at / 3600000) * 3600000, n), (a, '', m, l, (start_at / 3600000) * 3600000, n)
        ON CONFLICT (account, device, label, hour, model) DO UPDATE SET events = event_counts.events + EXCLUDED.events;
$$ LANGUAGE sql;

CREATE FUNCTION event_counts_follow() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.start_at / 3600000) = (NEW.start_at / 3600000) AND OLD.label = NEW.label
        AND OLD.device = NEW.device AND OLD.model = NEW.model AND OLD.account = NEW.account THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM event_counts_add(OLD.account, OLD.device, OLD.model, OLD.label, OLD.start_at, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM event_counts_add(NEW.account, NEW.device, NEW.model, NEW.label, NEW.start_at, 1);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER event_counts_follow AFTER INSERT OR DELETE OR UPDATE OF account, device, model, label, start_at
    ON events FOR EACH ROW EXECUTE FUNCTION event_counts_follow();
