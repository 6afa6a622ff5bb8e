-- How far each durable consumer of the outbox (the Milvus sync) has applied it. The worker moves
-- its row only after the consumer acknowledged, so a restart or a takeover by another replica
-- continues from there; outbox compaction must never pass the lowest watermark here.
CREATE TABLE outbox_consumers (
    name TEXT PRIMARY KEY NOT NULL,
    watermark BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
