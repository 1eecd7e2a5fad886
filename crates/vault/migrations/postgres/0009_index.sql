-- The results index (docs/vault.md, "The index"): what the detector workers found, kept per
-- chunk and model, and joined into events. Times are unix milliseconds, absolute (the
-- recording's start plus the frame's time in it).

-- One row per analysed chunk and model: a re-delivered or re-analysed result replaces its row.
CREATE TABLE chunk_results (
    chunk_id        TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    device          TEXT    NOT NULL,
    recorded_at     BIGINT  NOT NULL,
    width           BIGINT  NOT NULL,
    height          BIGINT  NOT NULL,
    frames_analyzed BIGINT  NOT NULL,
    object_count    TEXT    NOT NULL,  -- JSON {label: distinct tracks}
    max_in_frame    TEXT    NOT NULL,  -- JSON {label: most in one frame}
    frames          TEXT    NOT NULL,  -- JSON: the frames' boxes, for drawing on the video
    indexed_at      BIGINT  NOT NULL,
    PRIMARY KEY (chunk_id, model)
);
CREATE INDEX chunk_results_by_device ON chunk_results (account, device, recorded_at);

-- Events: objects followed across chunks (the tracks below, joined at chunk boundaries).
CREATE TABLE events (
    id           BIGSERIAL PRIMARY KEY,
    account      TEXT    NOT NULL,
    device       TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    label        TEXT    NOT NULL,
    start_at     BIGINT  NOT NULL,
    end_at       BIGINT  NOT NULL,
    duration_ms  BIGINT  NOT NULL,
    best_score   DOUBLE PRECISION NOT NULL,
    best_chunk   TEXT    NOT NULL,  -- the track holding the best view, and its thumbnail
    best_track   BIGINT  NOT NULL
);
CREATE INDEX events_by_time ON events (account, start_at DESC, id DESC);
CREATE INDEX events_by_device ON events (account, device, start_at DESC, id DESC);
CREATE INDEX events_by_label ON events (account, label, start_at DESC, id DESC);
CREATE INDEX events_by_device_label ON events (account, device, label, start_at DESC, id DESC);

-- One row per track of a chunk's result; event_id is the event it belongs to.
CREATE TABLE tracks (
    chunk_id     TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    track_id     BIGINT  NOT NULL,
    account      TEXT    NOT NULL,
    device       TEXT    NOT NULL,
    label        TEXT    NOT NULL,
    first_at     BIGINT  NOT NULL,
    last_at      BIGINT  NOT NULL,
    best_score   DOUBLE PRECISION NOT NULL,
    best_at      BIGINT  NOT NULL,
    ends         TEXT    NOT NULL,  -- JSON: first and last box and velocity, for joining
    boxes        TEXT    NOT NULL,  -- JSON: the box in each analysed frame
    zones        TEXT    NOT NULL,  -- JSON: the zones' visits
    thumbnail    TEXT,              -- base64 JPEG
    event_id     BIGINT  NOT NULL,
    PRIMARY KEY (chunk_id, model, track_id)
);
CREATE INDEX tracks_by_event ON tracks (event_id);
CREATE INDEX tracks_by_end ON tracks (account, device, model, last_at);
CREATE INDEX tracks_by_start ON tracks (account, device, model, first_at);

-- The zones each event entered: entered and left in absolute ms, dwell summed over its tracks.
CREATE TABLE event_zones (
    event_id     BIGINT  NOT NULL,
    zone         TEXT    NOT NULL,
    entered_at   BIGINT  NOT NULL,
    left_at      BIGINT  NOT NULL,
    dwell_ms     BIGINT  NOT NULL,
    PRIMARY KEY (event_id, zone)
);
CREATE INDEX event_zones_by_zone ON event_zones (zone, event_id);
