//! Parsing `#[requires_approval(...)]`'s options.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Path, Token, parenthesized};

/// The options, as written.
pub(crate) struct Options {
    pub(crate) policy: LitStr,
    pub(crate) resource: Option<Expr>,
    pub(crate) reason: Option<Expr>,
    pub(crate) gate: Option<Expr>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) redact: Vec<Ident>,
    pub(crate) krate: Option<Path>,
    /// `defer`: answer `Pending` at once instead of waiting.
    pub(crate) defer: bool,
    /// `credential = name`: the parameter the policy's minted credential is
    /// given to (not the caller's to pass).
    pub(crate) credential: Option<Ident>,
}

const VALID: &str = "policy, resource, reason, skip, redact, gate, crate, defer, credential";

/// Sets an option once; a second time is an error at the repeat.
fn set_once<T>(slot: &mut Option<T>, value: T, name: &Ident) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            name.span(),
            format!("duplicate option `{name}`"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut policy = None;
        let mut resource = None;
        let mut reason = None;
        let mut gate = None;
        let mut krate = None;
        let mut defer = None;
        let mut credential = None;
        let mut skip: Option<Vec<Ident>> = None;
        let mut redact: Option<Vec<Ident>> = None;
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        while !input.is_empty() {
            // `crate` is a keyword: accept it as an option name too.
            let name = if input.peek(Token![crate]) {
                let token: Token![crate] = input.parse()?;
                Ident::new("crate", token.span)
            } else {
                input.parse::<Ident>()?
            };
            let result = match name.to_string().as_str() {
                "policy" => value::<LitStr>(input).and_then(|v| set_once(&mut policy, v, &name)),
                "resource" => value::<Expr>(input).and_then(|v| set_once(&mut resource, v, &name)),
                "reason" => value::<Expr>(input).and_then(|v| set_once(&mut reason, v, &name)),
                "gate" => value::<Expr>(input).and_then(|v| set_once(&mut gate, v, &name)),
                "crate" => value::<Path>(input).and_then(|v| set_once(&mut krate, v, &name)),
                "skip" => list(input).and_then(|v| set_once(&mut skip, v, &name)),
                "redact" => list(input).and_then(|v| set_once(&mut redact, v, &name)),
                "defer" => set_once(&mut defer, (), &name),
                "credential" => {
                    value::<Ident>(input).and_then(|v| set_once(&mut credential, v, &name))
                }
                other => {
                    // Skip the option's value so the other options are
                    // still checked.
                    if input.peek(Token![=]) {
                        let _: Token![=] = input.parse()?;
                        let _: Expr = input.parse()?;
                    } else if input.peek(syn::token::Paren) {
                        // Taken whole, whatever it holds: an unknown
                        // option's value has no shape to report on.
                        input.parse::<proc_macro2::Group>()?;
                    }
                    Err(syn::Error::new(
                        name.span(),
                        format!("unknown option `{other}`; expected one of: {VALID}"),
                    ))
                }
            };
            if let Err(e) = result {
                push(e);
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        let Some(policy) = policy else {
            push(syn::Error::new(
                Span::call_site(),
                "missing `policy = \"...\"`: every gated function names the policy that decides who approves it",
            ));
            return Err(errors.unwrap_or_else(|| syn::Error::new(Span::call_site(), "invalid")));
        };
        if let Some(errors) = errors {
            return Err(errors);
        }
        Ok(Self {
            policy,
            resource,
            reason,
            gate,
            skip: skip.unwrap_or_default(),
            redact: redact.unwrap_or_default(),
            krate,
            defer: defer.is_some(),
            credential,
        })
    }
}

fn value<T: Parse>(input: ParseStream<'_>) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input.parse()
}

fn list(input: ParseStream<'_>) -> syn::Result<Vec<Ident>> {
    let content;
    parenthesized!(content in input);
    Ok(Punctuated::<Ident, Token![,]>::parse_terminated(&content)?
        .into_iter()
        .collect())
}
