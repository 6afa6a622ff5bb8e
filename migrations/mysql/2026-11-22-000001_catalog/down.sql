DROP TABLE outbox;
DROP TABLE products;
DROP TABLE sellers;
DROP TABLE categories;
