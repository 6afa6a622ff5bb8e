-- Times are microseconds since the Unix epoch (BIGINT) so the same schema reads alike on every backend.
-- Ids are ASCII with binary collation so keyset pagination compares them byte by byte, as the other backends do.
CREATE TABLE categories (
    id VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    display_name VARCHAR(80) NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE sellers (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    display_name VARCHAR(100) NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE products (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    seller_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    category_id VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name VARCHAR(200) NOT NULL,
    description TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    image_urls TEXT NOT NULL,
    embedding LONGBLOB,
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    CONSTRAINT fk_products_seller FOREIGN KEY (seller_id) REFERENCES sellers(id),
    CONSTRAINT fk_products_category FOREIGN KEY (category_id) REFERENCES categories(id),
    INDEX idx_products_created (created_at, id),
    INDEX idx_products_price (price_minor, id),
    INDEX idx_products_category (category_id, created_at),
    INDEX idx_products_seller (seller_id, created_at),
    INDEX idx_products_status (status, created_at),
    INDEX idx_products_currency_price (currency, price_minor)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The outbox: every catalog write appends here in the same transaction; followers tail it by id.
CREATE TABLE outbox (
    id BIGINT AUTO_INCREMENT PRIMARY KEY NOT NULL,
    product_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    op VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    embedding LONGBLOB,
    created_at BIGINT NOT NULL,
    INDEX idx_outbox_product (product_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO categories (id, display_name, created_at) VALUES
    ('shoes', 'Shoes', 0),
    ('dresses', 'Dresses', 0),
    ('furniture', 'Furniture', 0),
    ('jewelry', 'Jewelry', 0),
    ('accessories', 'Accessories', 0);
