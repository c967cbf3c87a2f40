# The spec's Python integration example (data-export-system.txt, "Python Integration"), run by
# tests/api/examples.rs against `kasad demo` on localhost:5272. The function is copied unchanged;
# only `import time` (which the spec's code uses but does not import) and the environment
# lookups of the usage block were added.
import os
import time
import requests
import pandas as pd
from io import StringIO

def export_device_data(token, device_ip, start_date, end_date):
    # Create export
    export_request = {
        "export_type": "device_data",
        "format": "csv",
        "date_range": {
            "start": start_date,
            "end": end_date
        },
        "devices": [device_ip],
        "fields": ["timestamp", "power_w", "energy_kwh", "cost"]
    }
    
    response = requests.post(
        "http://localhost:5272/api/exports/create",
        json=export_request,
        headers={"Authorization": f"Bearer {token}"}
    )
    
    export_id = response.json()["export_id"]
    
    # Wait for completion and download
    while True:
        status_response = requests.get(
            f"http://localhost:5272/api/exports/{export_id}",
            headers={"Authorization": f"Bearer {token}"}
        )
        
        status = status_response.json()["status"]
        if status == "completed":
            break
        elif status == "failed":
            raise Exception("Export failed")
        
        time.sleep(5)
    
    # Download data
    download_response = requests.get(
        f"http://localhost:5272/api/exports/download/{export_id}",
        headers={"Authorization": f"Bearer {token}"}
    )
    
    # Convert to pandas DataFrame
    df = pd.read_csv(StringIO(download_response.text))
    return df

# Usage
df = export_device_data(
    token=os.environ["KASAD_TOKEN"],
    device_ip=os.environ["KASAD_DEVICE_IP"],
    start_date=os.environ["KASAD_START"],
    end_date=os.environ["KASAD_END"]
)

print(f"Exported {len(df)} records")
print(df.head())
