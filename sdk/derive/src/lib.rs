//! `#[derive(Settings)]`: a plugin's options in one place. Use it through
//! `rtap_sdk::prelude`; the SDK's `settings` module documents it.
//!
//! The derive reads the struct and writes the list of its options (name, doc
//! comment, default, bounds) for the SDK, which turns it into the config
//! schema and the default config and enforces the bounds. It runs at compile
//! time, so a plugin carries no schema generator, only that list.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Error, Expr, Fields, LitStr, Token};

/// Derive `rtap_sdk::settings::Settings` for a struct of operator options.
///
/// ```ignore
/// #[derive(Deserialize, Settings)]
/// #[serde(deny_unknown_fields, default)]
/// pub struct Settings {
///     /// Page views by one user that make a burst
///     #[setting(min = 1, max = 100_000)]
///     pub min_page_views: u32,
/// }
/// ```
///
/// Field attributes: `#[setting(min = EXPR, max = EXPR)]` (either or both,
/// of the field's type) and `#[setting(one_of = ["a", "b"])]` (a `String`).
#[proc_macro_derive(Settings, attributes(setting))]
pub fn derive_settings(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "#[derive(Settings)] takes a struct without generics",
        ));
    }
    check_container(input)?;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            _ => {
                return Err(Error::new(
                    input.ident.span(),
                    "#[derive(Settings)] needs a struct with named fields",
                ));
            }
        },
        _ => {
            return Err(Error::new(
                input.ident.span(),
                "#[derive(Settings)] needs a struct with named fields",
            ));
        }
    };

    let mut options = Vec::new();
    for field in fields {
        let ident = field.ident.as_ref().expect("named field");
        let ty = &field.ty;
        for attr in &field.attrs {
            if attr.path().is_ident("serde") {
                return Err(Error::new(
                    attr.span(),
                    "#[derive(Settings)] does not support serde attributes on fields: \
                     the option is named after the field and defaults to the struct's `Default`",
                ));
            }
        }
        let name = ident.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name);
        let description = doc_comment(&field.attrs);
        let bounds = FieldAttrs::of(&field.attrs)?;
        let span = ty.span();
        let mut option = quote_spanned! {span=>
            ::rtap_sdk::settings::Field::new::<#ty>(#name, #description, &defaults.#ident)
        };
        if let Some(min) = &bounds.min {
            option = quote_spanned! {min.span()=> #option.min::<#ty>(#min) };
        }
        if let Some(max) = &bounds.max {
            option = quote_spanned! {max.span()=> #option.max::<#ty>(#max) };
        }
        if let Some(choices) = &bounds.one_of {
            option = quote_spanned! {span=> #option.one_of::<#ty>(&[#(#choices),*]) };
        }
        options.push(option);
    }

    let name = &input.ident;
    Ok(quote! {
        #[automatically_derived]
        impl ::rtap_sdk::settings::Settings for #name {
            fn fields() -> ::std::vec::Vec<::rtap_sdk::settings::Field> {
                let defaults = <Self as ::core::default::Default>::default();
                ::std::vec![#(#options),*]
            }
        }
    })
}

/// The struct must refuse unknown options and default each missing one:
/// what the schema says (`additionalProperties: false`, nothing required).
fn check_container(input: &DeriveInput) -> syn::Result<()> {
    let (mut deny_unknown, mut default) = (false, false);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("deny_unknown_fields") {
                deny_unknown = true;
            } else if meta.path.is_ident("default") && !meta.input.peek(Token![=]) {
                default = true;
            } else {
                return Err(meta.error(
                    "#[derive(Settings)] supports only #[serde(deny_unknown_fields, default)] \
                     on the struct",
                ));
            }
            Ok(())
        })?;
    }
    if deny_unknown && default {
        Ok(())
    } else {
        Err(Error::new(
            input.ident.span(),
            "#[derive(Settings)] needs #[serde(deny_unknown_fields, default)] on the struct: \
             every option optional with its default, a misspelt one refused",
        ))
    }
}

/// The field's doc comment on one line (the schema's `description`).
fn doc_comment(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            lines.extend(
                s.value()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
    }
    lines.join(" ")
}

#[derive(Default)]
struct FieldAttrs {
    min: Option<Expr>,
    max: Option<Expr>,
    one_of: Option<Vec<LitStr>>,
}

impl FieldAttrs {
    fn of(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut out = FieldAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("setting")) {
            attr.parse_nested_meta(|meta| {
                let slot_taken = |taken: bool| {
                    if taken {
                        Err(meta.error("given twice"))
                    } else {
                        Ok(())
                    }
                };
                if meta.path.is_ident("min") {
                    slot_taken(out.min.is_some())?;
                    out.min = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("max") {
                    slot_taken(out.max.is_some())?;
                    out.max = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("one_of") {
                    slot_taken(out.one_of.is_some())?;
                    let list: StrList = meta.value()?.parse()?;
                    if list.0.is_empty() {
                        return Err(meta.error("one_of needs at least one value"));
                    }
                    out.one_of = Some(list.0);
                } else {
                    return Err(
                        meta.error("expected `min = ..`, `max = ..` or `one_of = [\"..\", ..]`")
                    );
                }
                Ok(())
            })?;
        }
        if out.one_of.is_some() && (out.min.is_some() || out.max.is_some()) {
            return Err(Error::new(
                Span::call_site(),
                "one_of is for a string option, min and max for a number",
            ));
        }
        Ok(out)
    }
}

/// `["a", "b"]`
struct StrList(Vec<LitStr>);

impl Parse for StrList {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let content;
        syn::bracketed!(content in input);
        let items = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
        Ok(StrList(items.into_iter().collect()))
    }
}
