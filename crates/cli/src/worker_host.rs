//! `flowbalancer worker`: this machine's pools served to gateways on other machines, over NATS.

use std::path::PathBuf;

use flowbalancer::Balancer;

/// How a worker host authenticates to the NATS server.
pub(crate) struct Credentials {
    pub(crate) token_env: Option<String>,
    pub(crate) creds: Option<PathBuf>,
    pub(crate) nkey: Option<PathBuf>,
}

/// `flowbalancer worker`: serves the balancer's tiers over NATS until a stop signal, then
/// drains every service.
pub(crate) async fn worker_host(
    balancer: &Balancer,
    url: &str,
    tier: Option<String>,
    credentials: Credentials,
    durable: bool,
) -> Result<(), String> {
    let mut connect = flowbalancer_nats::ConnectConfig::new(url).name("flowbalancer worker host");
    if let Some(variable) = credentials.token_env {
        connect = connect.token_env(variable);
    }
    if let Some(creds) = credentials.creds {
        connect = connect.creds(creds);
    }
    if let Some(nkey) = credentials.nkey {
        connect = connect.nkey(nkey);
    }
    let names = match tier {
        Some(name) => vec![name],
        None => balancer.router().tier_names(),
    };
    // Before connecting or saying "serving": a name NATS cannot carry is a usage error.
    if let Some(bad) = names
        .iter()
        .find(|name| !flowbalancer_nats::wire::is_valid_tier_name(name))
    {
        return Err(flowbalancer_nats::NatsError::InvalidTier(bad.clone()).to_string());
    }
    let client = flowbalancer_nats::connect(&connect)
        .await
        .map_err(|e| e.to_string())?;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut hosts = tokio::task::JoinSet::new();
    for name in names {
        let (client, router, stop) = (client.clone(), balancer.router().clone(), stop.clone());
        eprintln!("flowbalancer: serving tier {name} over NATS at {url}");
        hosts.spawn(async move {
            flowbalancer_nats::serve_host(
                client,
                router,
                flowbalancer_nats::HostConfig::new(name).durable(durable),
                stop.cancelled_owned(),
            )
            .await
        });
    }
    let mut result = Ok(());
    tokio::select! {
        () = crate::stop_signal() => {}
        Some(ended) = hosts.join_next() => {
            // A host that ends on its own failed to start: stop the others.
            result = match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(error.to_string()),
            };
        }
    }
    stop.cancel();
    while let Some(ended) = hosts.join_next().await {
        if let Ok(Err(error)) = ended
            && result.is_ok()
        {
            result = Err(error.to_string());
        }
    }
    result
}
