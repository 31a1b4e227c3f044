//! The SDK's derives, used through `rtap_sdk::prelude`:
//!
//! - `#[derive(Settings)]`: a plugin's options in one place (the SDK's
//!   `settings` module documents it);
//! - `#[derive(Serialize, Deserialize)]`: serde's derives, going through
//!   `rtap_sdk::serde`, so a plugin crate needs no `serde` dependency of its
//!   own (serde's own derives name the `serde` crate of the crate that uses
//!   them). Each writes a private copy of the type with serde's derive and
//!   `#[serde(remote = "Type", crate = "::rtap_sdk::serde")]`, and
//!   implements the trait for the type through it: every `#[serde(...)]`
//!   attribute of the type works as with serde's own derive.
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

/// serde's `Serialize`, through `rtap_sdk::serde` (see the crate docs).
#[proc_macro_derive(Serialize, attributes(serde))]
pub fn derive_serialize(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    through_sdk(&input, Trait::Serialize)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// serde's `Deserialize`, through `rtap_sdk::serde` (see the crate docs).
#[proc_macro_derive(Deserialize, attributes(serde))]
pub fn derive_deserialize(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    through_sdk(&input, Trait::Deserialize)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

#[derive(Clone, Copy)]
enum Trait {
    Serialize,
    Deserialize,
}

fn through_sdk(input: &DeriveInput, which: Trait) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "the SDK's Serialize/Deserialize derives take types without generics or lifetimes; \
             for this one add `serde = { version = \"1\", features = [\"derive\"] }` to Cargo.toml \
             and derive `serde::Serialize` / `serde::Deserialize`",
        ));
    }
    let name = &input.ident;
    let mut copy = input.clone();
    copy.ident = syn::Ident::new(&format!("__RtapSerde{name}"), name.span());
    copy.vis = syn::Visibility::Inherited;
    let serde_only = |attrs: &mut Vec<Attribute>| attrs.retain(|a| a.path().is_ident("serde"));
    serde_only(&mut copy.attrs);
    match &mut copy.data {
        Data::Struct(s) => s.fields.iter_mut().for_each(|f| serde_only(&mut f.attrs)),
        Data::Enum(e) => {
            for v in e.variants.iter_mut() {
                serde_only(&mut v.attrs);
                v.fields.iter_mut().for_each(|f| serde_only(&mut f.attrs));
            }
        }
        Data::Union(_) => {
            return Err(Error::new(name.span(), "serde does not derive for unions"));
        }
    }
    // A bare container `default` would ask the copy for `Default`: name the
    // type's own instead.
    let default_fn = syn::Ident::new(&format!("__rtap_default_{name}"), name.span());
    let default_path = default_fn.to_string();
    let mut bare_default = false;
    for attr in copy.attrs.iter_mut() {
        let items = attr.parse_args_with(Punctuated::<syn::Meta, Token![,]>::parse_terminated)?;
        let items = items.into_iter().map(|m| match &m {
            syn::Meta::Path(p) if p.is_ident("default") => {
                bare_default = true;
                quote! { default = #default_path }
            }
            _ => quote! { #m },
        });
        let items: Vec<TokenStream2> = items.collect();
        *attr = syn::parse_quote! { #[serde(#(#items),*)] };
    }
    let default_impl = bare_default.then(|| {
        quote! {
            #[allow(non_snake_case, dead_code)]
            fn #default_fn() -> #name {
                <#name as ::core::default::Default>::default()
            }
        }
    });
    let copy_name = &copy.ident;
    let remote = name.to_string();
    let imp = match which {
        Trait::Serialize => quote! {
            #[derive(::rtap_sdk::serde::Serialize)]
            #[serde(crate = "::rtap_sdk::serde", remote = #remote)]
            #[allow(dead_code, clippy::all)]
            #copy
            #[automatically_derived]
            impl ::rtap_sdk::serde::Serialize for #name {
                fn serialize<__S: ::rtap_sdk::serde::Serializer>(
                    &self,
                    serializer: __S,
                ) -> ::core::result::Result<__S::Ok, __S::Error> {
                    #copy_name::serialize(self, serializer)
                }
            }
        },
        Trait::Deserialize => quote! {
            #[derive(::rtap_sdk::serde::Deserialize)]
            #[serde(crate = "::rtap_sdk::serde", remote = #remote)]
            #[allow(dead_code, clippy::all)]
            #copy
            #[automatically_derived]
            impl<'de> ::rtap_sdk::serde::Deserialize<'de> for #name {
                fn deserialize<__D: ::rtap_sdk::serde::Deserializer<'de>>(
                    deserializer: __D,
                ) -> ::core::result::Result<Self, __D::Error> {
                    #copy_name::deserialize(deserializer)
                }
            }
        },
    };
    Ok(quote! {
        const _: () = {
            #default_impl
            #imp
        };
    })
}

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
