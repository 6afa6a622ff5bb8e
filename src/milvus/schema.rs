//! The collection's shape: one entity per product that has an embedding, keyed by product id,
//! with the scalar fields that search filters on. And the conversions between our rows and
//! Milvus's column-wise `FieldData`.

use super::Row;
use crate::proto::milvus::proto::{
    common::KeyValuePair,
    schema::{
        CollectionSchema, DataType, FieldData, FieldSchema, FloatArray, LongArray, ScalarField, StringArray,
        VectorField, field_data, scalar_field, vector_field,
    },
};

pub const ID: &str = "id";
pub const EMBEDDING: &str = "embedding";
pub const CATEGORY: &str = "category";
pub const SELLER: &str = "seller";
pub const PRICE_MINOR: &str = "price_minor";
pub const CURRENCY: &str = "currency";
pub const STATUS: &str = "status";
/// Every field, as a query asks for whole rows.
pub const ALL_FIELDS: &[&str] = &[ID, EMBEDDING, CATEGORY, SELLER, PRICE_MINOR, CURRENCY, STATUS];

/// Longest id or category Milvus stores (product ids are 36-character UUIDs; category ids are
/// bounded shorter by the catalog).
const VARCHAR_MAX: usize = 128;

/// One of Milvus's key-value parameters.
pub fn kv(key: &str, value: impl ToString) -> KeyValuePair {
    KeyValuePair { key: key.to_owned(), value: value.to_string() }
}

fn varchar(name: &str, max: usize) -> FieldSchema {
    FieldSchema {
        name: name.to_owned(),
        data_type: DataType::VarChar as i32,
        type_params: vec![kv("max_length", max)],
        ..Default::default()
    }
}

pub fn collection(name: &str, dim: usize) -> CollectionSchema {
    CollectionSchema {
        name: name.to_owned(),
        description: "Soko products: one entity per product with an embedding, synced from the outbox".into(),
        fields: vec![
            FieldSchema { is_primary_key: true, ..varchar(ID, VARCHAR_MAX) },
            FieldSchema {
                name: EMBEDDING.into(),
                data_type: DataType::FloatVector as i32,
                type_params: vec![kv("dim", dim)],
                ..Default::default()
            },
            varchar(CATEGORY, VARCHAR_MAX),
            varchar(SELLER, VARCHAR_MAX),
            FieldSchema { name: PRICE_MINOR.into(), data_type: DataType::Int64 as i32, ..Default::default() },
            varchar(CURRENCY, 8),
            varchar(STATUS, 16),
        ],
        ..Default::default()
    }
}

/// The dimension of the collection's vector field, as Milvus describes it.
pub fn vector_dim(schema: &CollectionSchema) -> Option<usize> {
    let field = schema.fields.iter().find(|f| f.data_type == DataType::FloatVector as i32)?;
    field.type_params.iter().find(|p| p.key == "dim")?.value.parse().ok()
}

fn strings(name: &str, values: Vec<String>) -> FieldData {
    FieldData {
        r#type: DataType::VarChar as i32,
        field_name: name.to_owned(),
        field: Some(field_data::Field::Scalars(ScalarField {
            data: Some(scalar_field::Data::StringData(StringArray { data: values })),
        })),
        ..Default::default()
    }
}

/// Rows as the columns an upsert sends.
pub fn columns(rows: &[Row], dim: usize) -> Vec<FieldData> {
    let text = |get: fn(&Row) -> &str| rows.iter().map(|r| get(r).to_owned()).collect::<Vec<_>>();
    vec![
        strings(ID, text(|r| &r.id)),
        FieldData {
            r#type: DataType::FloatVector as i32,
            field_name: EMBEDDING.into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim: dim as i64,
                data: Some(vector_field::Data::FloatVector(FloatArray {
                    data: rows.iter().flat_map(|r| r.embedding.iter().copied()).collect(),
                })),
            })),
            ..Default::default()
        },
        strings(CATEGORY, text(|r| &r.category)),
        strings(SELLER, text(|r| &r.seller)),
        FieldData {
            r#type: DataType::Int64 as i32,
            field_name: PRICE_MINOR.into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::LongData(LongArray {
                    data: rows.iter().map(|r| r.price_minor).collect(),
                })),
            })),
            ..Default::default()
        },
        strings(CURRENCY, text(|r| &r.currency)),
        strings(STATUS, text(|r| &r.status)),
    ]
}

/// Columns a query answered, back into rows. Fields it did not return stay empty.
pub fn rows(columns: &[FieldData]) -> Result<Vec<Row>, String> {
    let column = |name: &str| columns.iter().find(|c| c.field_name == name);
    let string_column = |name: &str| -> Result<Option<&Vec<String>>, String> {
        match column(name).and_then(|c| c.field.as_ref()) {
            None => Ok(None),
            Some(field_data::Field::Scalars(ScalarField { data: Some(scalar_field::Data::StringData(s)) })) => {
                Ok(Some(&s.data))
            }
            Some(_) => Err(format!("field `{name}` is not a string column")),
        }
    };
    let ids = string_column(ID)?.ok_or("no `id` column")?;
    let mut rows: Vec<Row> = ids.iter().map(|id| Row { id: id.clone(), ..Row::default() }).collect();
    for (name, set) in [
        (CATEGORY, (|r: &mut Row, v: &String| r.category = v.clone()) as fn(&mut Row, &String)),
        (SELLER, |r, v| r.seller = v.clone()),
        (CURRENCY, |r, v| r.currency = v.clone()),
        (STATUS, |r, v| r.status = v.clone()),
    ] {
        if let Some(values) = string_column(name)? {
            rows.iter_mut().zip(values).for_each(|(r, v)| set(r, v));
        }
    }
    match column(PRICE_MINOR).and_then(|c| c.field.as_ref()) {
        None => {}
        Some(field_data::Field::Scalars(ScalarField { data: Some(scalar_field::Data::LongData(l)) })) => {
            rows.iter_mut().zip(&l.data).for_each(|(r, v)| r.price_minor = *v);
        }
        Some(_) => return Err(format!("field `{PRICE_MINOR}` is not an int64 column")),
    }
    match column(EMBEDDING).and_then(|c| c.field.as_ref()) {
        None => {}
        Some(field_data::Field::Vectors(VectorField { dim, data: Some(vector_field::Data::FloatVector(f)) })) => {
            let dim = usize::try_from(*dim).ok().filter(|d| *d > 0).ok_or("vector column without a dimension")?;
            rows.iter_mut().zip(f.data.chunks(dim)).for_each(|(r, v)| r.embedding = v.to_vec());
        }
        Some(_) => return Err(format!("field `{EMBEDDING}` is not a float vector column")),
    }
    Ok(rows)
}

/// A boolean expression matching these primary keys. Ids are product ids, UUIDs that the domain
/// validated, so they need no escaping; anything else is dropped rather than spliced in.
pub fn ids_expr(ids: &[String]) -> String {
    let quoted: Vec<String> = ids
        .iter()
        .filter(|id| id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map(|id| format!("\"{id}\""))
        .collect();
    format!("{ID} in [{}]", quoted.join(", "))
}

/// A string literal in a Milvus expression.
pub fn literal(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The search service's filter as a Milvus boolean expression over the scalar fields (search
/// covers active products only), leaving out `exclude`.
pub fn filter_expr(
    filter: &crate::domain::listing::ProductFilter,
    exclude: Option<crate::domain::product::ProductId>,
) -> String {
    let status = filter.status.unwrap_or(crate::domain::product::ProductStatus::Active);
    let mut terms = vec![format!("{STATUS} == {}", literal(status.as_str()))];
    if let Some(category) = &filter.category_id {
        terms.push(format!("{CATEGORY} == {}", literal(category.as_str())));
    }
    if let Some(seller) = &filter.seller_id {
        terms.push(format!("{SELLER} == {}", literal(&seller.to_string())));
    }
    if let Some(currency) = &filter.currency {
        terms.push(format!("{CURRENCY} == {}", literal(currency.as_str())));
    }
    if let Some(min) = filter.min_price_minor {
        terms.push(format!("{PRICE_MINOR} >= {min}"));
    }
    if let Some(max) = filter.max_price_minor {
        terms.push(format!("{PRICE_MINOR} <= {max}"));
    }
    if let Some(id) = exclude {
        terms.push(format!("{ID} != {}", literal(&id.to_string())));
    }
    terms.join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_the_trip_through_columns() {
        let row = Row {
            id: "0b5f6f9e-5a43-4d4b-9a9e-6f6e0c1d2e3f".into(),
            embedding: vec![0.5, -0.25, 1.0],
            category: "shoes".into(),
            seller: "s-1".into(),
            price_minor: 4_500,
            currency: "KES".into(),
            status: "active".into(),
        };
        let back = rows(&columns(&[row.clone(), row.clone()], 3)).unwrap();
        assert_eq!(back, vec![row.clone(), row]);
    }

    #[test]
    fn a_filter_becomes_one_expression_and_literals_stay_literals() {
        let filter = crate::domain::listing::ProductFilter {
            min_price_minor: Some(100),
            max_price_minor: Some(900),
            ..Default::default()
        };
        assert_eq!(filter_expr(&filter, None), "status == \"active\" && price_minor >= 100 && price_minor <= 900");
        assert_eq!(literal("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn an_id_expression_never_splices_in_quotes() {
        let expr = ids_expr(&["abc-1".into(), "x\" or id != \"".into()]);
        assert_eq!(expr, "id in [\"abc-1\"]");
    }
}
