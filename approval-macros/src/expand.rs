//! Expanding a gated function: gather the call's context, then one call
//! into `approval_core::__private` per step. The logic lives in core.
//!
//! ```text
//! async fn f(a: A, b: B) -> Result<T, E> { body }
//! // becomes
//! async fn f(a: A, b: B) -> Result<T, E> {
//!     let gate = resolve_gate(named)?;
//!     let call = Args::new(&gate) + a, b ... .call(action, policy, resource, reason)?;
//!     let approval = gate.approve(call).await?;        // waits for people
//!     let confirmed = approval.confirm_args(&binding of a, b).await?;  // unchanged since?
//!     confirmed.execute(async move { body }).await     // runs, records
//! }
//! ```

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Expr, ExprAsync, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Stmt,
    Type, TypeParamBound,
};

use crate::attr::Options;

/// One named parameter and how it is recorded.
struct Param<'a> {
    name: &'a Ident,
    ty: &'a syn::Type,
    kind: Kind,
    /// For a binding inside a pattern parameter: the pattern, as written,
    /// which names the object its bindings are recorded in.
    pattern: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Recorded,
    Redacted,
    Skipped,
}

pub(crate) fn expand(options: &Options, item: &ItemFn) -> syn::Result<TokenStream> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };

    let mut params = Vec::new();
    // The parameter the minted credential is given to: not the caller's.
    let mut credential = None;
    for input in &item.sig.inputs {
        let FnArg::Typed(typed) = input else {
            continue; // `self` is the receiver, not an argument to record.
        };
        if let (Pat::Ident(pat), Some(name)) = (&*typed.pat, &options.credential)
            && pat.ident == *name
        {
            credential = Some(typed);
            continue;
        }
        match &*typed.pat {
            Pat::Ident(pat) if pat.subpat.is_none() => params.push(Param {
                name: &pat.ident,
                ty: &typed.ty,
                kind: Kind::Recorded,
                pattern: None,
            }),
            // A pattern stays in the signature; its bindings are recorded
            // as one object named after the pattern.
            pattern => {
                let text = pattern_text(pattern);
                let mut names = Vec::new();
                if let Err(e) = bindings(pattern, &mut names) {
                    push(e);
                }
                for name in names {
                    params.push(Param {
                        name,
                        ty: &typed.ty,
                        kind: Kind::Recorded,
                        pattern: Some(text.clone()),
                    });
                }
            }
        }
    }
    for (list, kind) in [
        (&options.skip, Kind::Skipped),
        (&options.redact, Kind::Redacted),
    ] {
        for name in list {
            match params.iter_mut().find(|p| p.name == name) {
                Some(param) if param.kind != Kind::Recorded => push(syn::Error::new(
                    name.span(),
                    format!("`{name}` is listed in both `skip` and `redact`"),
                )),
                Some(param) => param.kind = kind,
                None => push(syn::Error::new(
                    name.span(),
                    format!("no parameter named `{name}`"),
                )),
            }
        }
    }
    if let Some(name) = &options.credential
        && credential.is_none()
    {
        push(syn::Error::new(
            name.span(),
            format!(
                "no parameter named `{name}` (the credential's parameter is a plain name, not a pattern)"
            ),
        ));
    }
    // Inside an `#[async_trait]` impl the method arrives already rewritten
    // into a plain fn returning `Box::pin(async move { .. })`: gate inside
    // that future, or the body would run ungated.
    let boxed = async_trait_body(item);
    if let (Some(_), Some(name)) = (&boxed, &options.credential) {
        push(syn::Error::new(
            name.span(),
            "`credential` is not supported on an `#[async_trait]` method: the trait's signature would lose the parameter",
        ));
    }
    let ret = match (&boxed, &item.sig.output) {
        (Some((_, output)), _) => *output,
        (None, ReturnType::Type(_, ty)) => &**ty,
        (None, ReturnType::Default) => {
            push(syn::Error::new(
                item.sig.span(),
                "a gated function must return `Result<T, E>` where `E: From<approval_core::ApprovalError> + Display`",
            ));
            return Err(errors.unwrap_or_else(|| syn::Error::new(item.sig.span(), "invalid")));
        }
    };
    if let Some(errors) = errors {
        return Err(errors);
    }

    let krate = options
        .krate
        .as_ref()
        .map_or_else(|| quote!(::approval_core), |path| quote!(#path));
    let private = quote!(#krate::__private);
    let fn_name = item.sig.ident.to_string();
    let policy = &options.policy;
    let gate = options.gate.as_ref().map_or_else(
        || quote!(::core::option::Option::None),
        |g| quote!(::core::option::Option::Some(&#g)),
    );
    let text = |expr: &Option<syn::Expr>| {
        expr.as_ref().map_or_else(
            || quote!(::core::option::Option::None),
            |e| quote!(::core::option::Option::Some(::std::string::ToString::to_string(&(#e)))),
        )
    };
    let (resource, reason) = (text(&options.resource), text(&options.reason));
    // Deferred: the first call answers `Pending`; the same call later runs
    // once if approved.
    let approve = if options.defer {
        quote!(approve_deferred)
    } else {
        quote!(approve)
    };

    // Each argument's collection is spanned at its type, so a type that is
    // not `Serialize` (or not `Redact`) is reported there.
    let collect = |with_skips: bool| -> Vec<TokenStream> {
        params
            .iter()
            .filter_map(|p| {
                let (name, key) = (p.name, p.name.to_string());
                // A binding in a pattern is reported at its own name.
                let span = if p.pattern.is_some() {
                    p.name.span()
                } else {
                    p.ty.span()
                };
                let group = p.pattern.as_ref().map_or_else(
                    || quote!(::core::option::Option::None),
                    |text| quote!(::core::option::Option::Some(#text)),
                );
                match p.kind {
                    Kind::Recorded => {
                        Some(quote_spanned!(span=> __approval_args.arg_in(#group, #key, &#name);))
                    }
                    Kind::Redacted => Some(
                        quote_spanned!(span=> __approval_args.redact_in(#group, #key, &#name);),
                    ),
                    Kind::Skipped if with_skips => Some(quote!(__approval_args.skip(#key);)),
                    Kind::Skipped => None,
                }
            })
            .collect()
    };
    let (for_call, for_binding) = (collect(true), collect(false));
    let takes_credential = credential.map(|_| quote!(__approval_args.takes_credential();));
    let return_check = quote_spanned!(ret.span()=> #private::gated_return::<#ret>(););

    let taking = credential.map(|_| quote!(.taking_credential()));
    let register = quote! {
        #private::inventory::submit! {
            #private::GatedFunction::new(::core::module_path!(), #fn_name, #policy)#taking
        }
    };
    // The gate and the call live in a block of their own, so the waiting
    // future holds neither across its awaits.
    let call = quote! {
        let __approval_waiting = {
            let __approval_gate = #private::resolve_gate(#gate)?;
            let __approval_call = {
                #[allow(unused_mut)]
                let mut __approval_args = #private::Args::new(&__approval_gate);
                #(#for_call)*
                #takes_credential
                __approval_args.call(
                    ::core::concat!(::core::module_path!(), "::", #fn_name),
                    #policy,
                    #resource,
                    #reason,
                )?
            };
            __approval_gate.#approve(__approval_call)
        };
    };
    let binding = quote! {
        {
            #[allow(unused_mut)]
            let mut __approval_args = #private::Args::for_approval(&__approval);
            #(#for_binding)*
            __approval_args.binding()?
        }
    };

    // The approval and its re-checked arguments live in a block of their
    // own: a borrowed local stays in the future until its scope ends, and
    // the body's wait should not carry them.
    let confirm = quote! {
        {
            let __approval = __approval_waiting.await?;
            let __approval_binding = #binding;
            __approval.confirm_args(&__approval_binding).await?
        }
    };
    let attrs = &item.attrs;
    let vis = &item.vis;
    // The credential's parameter leaves the signature: the gate gives it.
    let mut sig = item.sig.clone();
    if let (Some(_), Some(name)) = (credential, &options.credential) {
        sig.inputs = sig
            .inputs
            .into_iter()
            .filter(|input| {
                !matches!(input, FnArg::Typed(t) if matches!(&*t.pat, Pat::Ident(p) if p.ident == *name))
            })
            .collect();
    }
    let sig = &sig;
    let block = &item.block;

    let body = if let Some((inner, _)) = &boxed {
        let inner_block = &inner.block;
        let pin = match &item.block.stmts[..] {
            [Stmt::Expr(Expr::Call(call), None)] => &call.func,
            _ => unreachable!("checked by async_trait_body"),
        };
        quote! {
            #pin(async move {
                #register
                #return_check
                #call
                #confirm.execute(async move #inner_block).await
            })
        }
    } else if sig.asyncness.is_some() {
        let execute = match credential {
            Some(param) => {
                let (pat, ty) = (&param.pat, &param.ty);
                quote!(execute_with_credential(move |#pat: #ty| async move #block))
            }
            None => quote!(execute(async move #block)),
        };
        quote! {
            #register
            #return_check
            #call
            #confirm.#execute.await
        }
    } else {
        let run_sync = match credential {
            Some(param) => {
                let (pat, ty) = (&param.pat, &param.ty);
                quote!(execute_with_credential(__approval, move |#pat: #ty| -> #ret #block))
            }
            None => quote!(execute(__approval, move || -> #ret #block)),
        };
        quote! {
            #register
            #return_check
            #call
            let __approval_blocking = #private::Blocking::new()?;
            let __approval = __approval_blocking.block_on(__approval_waiting)?;
            let __approval_binding = #binding;
            let __approval = __approval_blocking.block_on(__approval.confirm_args(&__approval_binding))?;
            __approval_blocking.#run_sync
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}

/// The `async move` block and future output type of a method that
/// `#[async_trait]` rewrote: a plain fn whose whole body is
/// `Box::pin(async move { .. })` and whose return type is
/// `Pin<Box<dyn Future<Output = R> + ..>>`.
fn async_trait_body(item: &ItemFn) -> Option<(&ExprAsync, &Type)> {
    if item.sig.asyncness.is_some() {
        return None;
    }
    let [Stmt::Expr(Expr::Call(call), None)] = &item.block.stmts[..] else {
        return None;
    };
    let Expr::Path(func) = &*call.func else {
        return None;
    };
    if func.path.segments.last()?.ident != "pin" || call.args.len() != 1 {
        return None;
    }
    let Expr::Async(block) = call.args.first()? else {
        return None;
    };
    let ReturnType::Type(_, ty) = &item.sig.output else {
        return None;
    };
    Some((block, future_output(ty)?))
}

/// `R` in `Pin<Box<dyn Future<Output = R> + ..>>`.
fn future_output(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let PathArguments::AngleBracketed(pin) = &path.path.segments.last()?.arguments else {
        return None;
    };
    let Some(GenericArgument::Type(Type::Path(boxed))) = pin.args.first() else {
        return None;
    };
    let PathArguments::AngleBracketed(boxed) = &boxed.path.segments.last()?.arguments else {
        return None;
    };
    let Some(GenericArgument::Type(Type::TraitObject(object))) = boxed.args.first() else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let segment = bound.path.segments.last()?;
        if segment.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &segment.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// A pattern as written, with Rust's token spacing tidied: `(a, b)`.
fn pattern_text(pattern: &Pat) -> String {
    quote!(#pattern)
        .to_string()
        .replace(" ,", ",")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace("& ", "&")
}

/// The names a pattern binds, in order. A pattern whose bindings the
/// macro cannot see (one a macro expands to) is an error: its values would
/// reach the body without being in the binding.
fn bindings<'a>(pattern: &'a Pat, out: &mut Vec<&'a Ident>) -> syn::Result<()> {
    match pattern {
        Pat::Ident(pat) => {
            out.push(&pat.ident);
            if let Some((_, sub)) = &pat.subpat {
                bindings(sub, out)?;
            }
            Ok(())
        }
        Pat::Tuple(tuple) => tuple.elems.iter().try_for_each(|p| bindings(p, out)),
        Pat::TupleStruct(tuple) => tuple.elems.iter().try_for_each(|p| bindings(p, out)),
        Pat::Struct(strukt) => strukt.fields.iter().try_for_each(|f| bindings(&f.pat, out)),
        Pat::Slice(slice) => slice.elems.iter().try_for_each(|p| bindings(p, out)),
        Pat::Reference(reference) => bindings(&reference.pat, out),
        Pat::Paren(paren) => bindings(&paren.pat, out),
        Pat::Type(typed) => bindings(&typed.pat, out),
        // Every alternative binds the same names.
        Pat::Or(or) => or
            .cases
            .first()
            .map_or(Ok(()), |first| bindings(first, out)),
        // Bind nothing: no value reaches the body through them.
        Pat::Wild(_)
        | Pat::Rest(_)
        | Pat::Lit(_)
        | Pat::Range(_)
        | Pat::Path(_)
        | Pat::Const(_) => Ok(()),
        other => Err(syn::Error::new(
            other.span(),
            "a gated function's parameter pattern must name what it binds (a pattern from a macro is not seen by `#[requires_approval]`, so its values would be left out of the approval's binding); bind the parameter to a name",
        )),
    }
}
