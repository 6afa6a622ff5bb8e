//! Diesel's view of the tables in `migrations/<backend>`. Only portable types are used (text,
//! BIGINT, binary) so one schema serves SQLite, PostgreSQL and MySQL.

diesel::table! {
    categories (id) {
        id -> Text,
        display_name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    sellers (id) {
        id -> Text,
        display_name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    products (id) {
        id -> Text,
        seller_id -> Text,
        category_id -> Text,
        name -> Text,
        description -> Text,
        price_minor -> BigInt,
        currency -> Text,
        image_urls -> Text,
        embedding -> Nullable<Binary>,
        status -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        deleted_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        product_id -> Text,
        op -> Text,
        embedding -> Nullable<Binary>,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(categories, sellers, products, outbox);
