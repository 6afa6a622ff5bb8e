-- Times are microseconds since the Unix epoch (BIGINT) so the same schema reads alike on every backend.
CREATE TABLE categories (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sellers (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE products (
    id TEXT PRIMARY KEY NOT NULL,
    seller_id TEXT NOT NULL REFERENCES sellers(id),
    category_id TEXT NOT NULL REFERENCES categories(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    image_urls TEXT NOT NULL,
    embedding BLOB,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX idx_products_created ON products (created_at, id);
CREATE INDEX idx_products_price ON products (price_minor, id);
CREATE INDEX idx_products_category ON products (category_id, created_at);
CREATE INDEX idx_products_seller ON products (seller_id, created_at);
CREATE INDEX idx_products_status ON products (status, created_at);
CREATE INDEX idx_products_currency_price ON products (currency, price_minor);

-- The outbox: every catalog write appends here in the same transaction; followers tail it by id.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    product_id TEXT NOT NULL,
    op TEXT NOT NULL,
    embedding BLOB,
    created_at BIGINT NOT NULL
);
CREATE INDEX idx_outbox_product ON outbox (product_id);

INSERT INTO categories (id, display_name, created_at) VALUES
    ('shoes', 'Shoes', 0),
    ('dresses', 'Dresses', 0),
    ('furniture', 'Furniture', 0),
    ('jewelry', 'Jewelry', 0),
    ('accessories', 'Accessories', 0);
