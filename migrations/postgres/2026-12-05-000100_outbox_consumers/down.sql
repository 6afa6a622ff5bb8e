DROP TABLE outbox_consumers;
