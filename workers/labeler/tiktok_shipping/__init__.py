"""TikTok Shipping labels: the Fulfillment API (202309)."""
