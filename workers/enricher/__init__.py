"""The enricher: TikTok webhooks in, orders with their line items out."""
