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
        owner_user_id -> Nullable<Text>,
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

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        display_name -> Text,
        secret_prefix -> Text,
        secret_hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        event_time -> BigInt,
        principal -> Text,
        action -> Text,
        resource -> Text,
        status_code -> Text,
        reason -> Text,
        client_ip -> Text,
        request_id -> Text,
        details -> Text,
    }
}

diesel::table! {
    leases (name) {
        name -> Text,
        holder -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    session_events (id) {
        id -> BigInt,
        event_time -> BigInt,
        session_id -> Nullable<Text>,
        user_id -> Nullable<Text>,
    }
}

diesel::table! {
    cluster_settings (name) {
        name -> Text,
        value -> Text,
        reason -> Text,
        updated_at -> BigInt,
        updated_by -> Text,
    }
}

diesel::table! {
    outbox_consumers (name) {
        name -> Text,
        watermark -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::joinable!(products -> sellers (seller_id));
diesel::joinable!(sellers -> users (owner_user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(api_keys -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    categories,
    sellers,
    products,
    outbox,
    users,
    sessions,
    refresh_tokens,
    api_keys,
    audit_events,
    leases,
    session_events,
    cluster_settings,
    outbox_consumers
);
