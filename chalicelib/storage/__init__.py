"""Storage layer: one small module per table or queue; every boto3 call to DynamoDB/SQS lives here."""
