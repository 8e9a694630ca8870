"""The receiver: TikTok webhooks, upstream orders and box-closed events, over HTTP."""
